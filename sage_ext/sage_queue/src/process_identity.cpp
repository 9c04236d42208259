// Process identity and liveness from /proc (see include/process_identity.h).
#include "process_identity.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sage {
namespace {

// Reads /proc/<pid>/stat (or a thread's) into buf; the length, or -errno.
long read_stat(const char* path, char* buf, size_t size) {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = ::read(fd, buf, size - 1);
    int err = errno;
    ::close(fd);
    if (n < 0) return -err;
    buf[n] = 0;
    return n;
}

struct StatFields {
    char state = 0;
    uint64_t cpu_ticks = 0;  // utime + stime
    uint64_t start = 0;
};

// The fields after the command name, which may itself hold spaces and ')'.
bool parse_stat(const char* text, StatFields& out) {
    const char* paren = strrchr(text, ')');
    if (!paren || paren[1] != ' ' || paren[2] == 0) return false;
    out.state = paren[2];
    // Fields from 3 (state) on, space separated; utime 14, stime 15, starttime 22.
    const char* p = paren + 2;
    for (int field = 3; field <= 22; ++field) {
        if (field >= 14) {
            char* end;
            unsigned long long v = strtoull(p, &end, 10);
            if (end == p) return false;
            if (field == 14 || field == 15) out.cpu_ticks += v;
            if (field == 22) out.start = v;
        }
        p = strchr(p, ' ');
        if (!p) return field == 22;
        ++p;
    }
    return true;
}

uint64_t namespace_inode(const char* path) {
    struct stat st{};
    return ::stat(path, &st) == 0 ? uint64_t(st.st_ino) : 0;
}

// One answer per pid: recomputed only in a forked child.
struct SelfCache {
    std::atomic<int32_t> pid{0};
    ProcessIdentity id{};
} self_cache;

Liveness liveness_of(int32_t pid, bool (*same_start)(uint64_t start, const void* arg), const void* arg) {
    if (pid <= 0) return Liveness::dead;
    if (kill(pid, 0) != 0 && errno == ESRCH) return Liveness::dead;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    long n = read_stat(path, buf, sizeof buf);
    if (n == -ENOENT || n == -ESRCH) return Liveness::dead;
    StatFields f;
    if (n <= 0 || !parse_stat(buf, f)) return Liveness::alive;  // it answered kill(): cannot tell more
    if (f.state == 'Z' || f.state == 'X') return Liveness::dead;
    return same_start(f.start, arg) ? Liveness::alive : Liveness::dead;
}

}  // namespace

ProcessIdentity self_identity() {
    const int32_t pid = int32_t(getpid());
    if (self_cache.pid.load(std::memory_order_acquire) == pid) return self_cache.id;
    ProcessIdentity id{pid, 0, namespace_inode("/proc/self/ns/pid")};
    char buf[1024];
    StatFields f;
    if (read_stat("/proc/self/stat", buf, sizeof buf) > 0 && parse_stat(buf, f)) id.start = f.start;
    self_cache.id = id;  // racing threads write the same values
    self_cache.pid.store(pid, std::memory_order_release);
    return id;
}

Liveness liveness(const ProcessIdentity& who) {
    const ProcessIdentity me = self_identity();
    // Another namespace's pid, or one whose namespace its writer could not tell: not ours to look up.
    if (who.pidns != me.pidns) return Liveness::unknown;
    if (who.pid == me.pid) return who.start == 0 || who.start == me.start ? Liveness::alive : Liveness::dead;
    return liveness_of(
        who.pid, [](uint64_t start, const void* arg) {
            uint64_t want = *static_cast<const uint64_t*>(arg);
            return want == 0 || start == want;
        },
        &who.start);
}

Liveness liveness_by_start32(int32_t pid, uint32_t start32) {
    return liveness_of(
        pid, [](uint64_t start, const void* arg) { return uint32_t(start) == *static_cast<const uint32_t*>(arg); },
        &start32);
}

char thread_state(int32_t tid, uint64_t* cpu_ticks) {
    if (tid <= 0) return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", tid);  // a thread's own, for any tid (hidden from listings)
    long n = read_stat(path, buf, sizeof buf);
    StatFields f;
    if (n <= 0 || !parse_stat(buf, f)) return 0;
    if (cpu_ticks) *cpu_ticks = f.cpu_ticks;
    return f.state;
}

}  // namespace sage
