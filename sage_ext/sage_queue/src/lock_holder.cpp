// The lock-holder checks (include/lock_holder.h).
#include "lock_holder.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include "process_identity.h"
#include "shm_queue.h"

namespace sage {
namespace {

// -- which threads of this process are inside lock()..unlock()
//
// A lock word is written by the locking thread itself, so a word naming a thread of ours
// that is in no locked call was not written by a lock: the segment is corrupt. Each
// thread has an entry (tid, epoch), the epoch odd while it is inside.
struct LockingThread {
    std::atomic<int32_t> tid{0};
    std::atomic<uint64_t> epoch{0};
};
constexpr int kMaxLockingThreads = 4096;
LockingThread locking_threads[kMaxLockingThreads];
std::atomic<bool> locking_table_full{false};  // then no thread of ours is called impossible
thread_local LockingThread* my_locking_entry = nullptr;

void forget_locking_threads() {  // in a forked child: only the forking thread is left
    for (auto& e : locking_threads) {
        e.tid.store(0, std::memory_order_relaxed);
        e.epoch.store(0, std::memory_order_relaxed);
    }
    my_locking_entry = nullptr;
}

struct LockingEntryRelease {  // frees the entry when the thread exits
    ~LockingEntryRelease() {
        if (my_locking_entry) my_locking_entry->tid.store(0, std::memory_order_release);
        my_locking_entry = nullptr;
    }
};

LockingThread* my_locking_thread() {
    if (my_locking_entry) return my_locking_entry;
    static const bool at_fork = (pthread_atfork(nullptr, nullptr, forget_locking_threads), true);
    (void)at_fork;
    thread_local LockingEntryRelease release;
    (void)release;
    const int32_t me = int32_t(syscall(SYS_gettid));
    for (auto& e : locking_threads) {
        int32_t free_slot = 0;
        if (e.tid.load(std::memory_order_relaxed) == 0 && e.tid.compare_exchange_strong(free_slot, me)) {
            e.epoch.store(0, std::memory_order_relaxed);
            return my_locking_entry = &e;
        }
    }
    locking_table_full.store(true);
    return nullptr;
}

}  // namespace

void enter_locking() {
    if (LockingThread* e = my_locking_thread()) {
        e->epoch.store(e->epoch.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
#if !defined(__x86_64__)
        std::atomic_thread_fence(std::memory_order_seq_cst);  // before the lock word's CAS
#endif
    }
}

void leave_locking() {
    if (LockingThread* e = my_locking_entry)
        e->epoch.store(e->epoch.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

namespace {

// The epoch of thread `tid` of this process: odd while it is inside lock()..unlock(); an
// odd value too when we cannot tell (no entry because the table filled up).
uint64_t locking_epoch(int32_t tid) {
    for (auto& e : locking_threads)
        if (e.tid.load(std::memory_order_acquire) == tid) return e.epoch.load(std::memory_order_seq_cst);
    return locking_table_full.load() ? 1 : 0;
}

}  // namespace

#if defined(__GLIBC__)
// -- who may hold the lock: the checks lock() makes while it waits

// The __kind glibc gives a robust process-shared mutex. A corrupt kind sends glibc down
// paths that abort the process (an out-of-range priority ceiling asserts).
int robust_shared_mutex_kind() {
    static const int kind = [] {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_t m;
        pthread_mutex_init(&m, &attr);
        pthread_mutexattr_destroy(&attr);
        int k = m.__data.__kind;
        pthread_mutex_destroy(&m);
        return k;
    }();
    return kind;
}

namespace {

struct MapEntry { unsigned long start; unsigned major, minor; unsigned long inode; };

// Each mapping's start, device and inode in /proc/<pid>/maps; returns 0 or errno.
int read_mappings(const std::string& pid, std::vector<MapEntry>& out) {
    int fd = ::open(("/proc/" + pid + "/maps").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    std::string text;
    char buf[16384];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, size_t(n));
    int err = n < 0 ? errno : 0;
    ::close(fd);
    for (size_t at = 0, end; at < text.size(); at = end + 1) {
        end = std::min(text.find('\n', at), text.size());
        const std::string line = text.substr(at, end - at);
        MapEntry m{};
        if (sscanf(line.c_str(), "%lx-%*x %*s %*x %x:%x %lu", &m.start, &m.major, &m.minor, &m.inode) == 4)
            out.push_back(m);
    }
    return err;
}


// Why thread `tid`, named by `word` (the lock word, read as `seen`), cannot hold the lock
// of the segment mapped at `segment`: "" if it may, "?" if we may not look (another user's
// process).
std::string impossible_holder(int tid, const int* word, int seen, const void* segment, bool foreign_users) {
    if (tid == 0) return "is marked held, by no thread";
    const std::string held = "is held by thread " + std::to_string(tid);
    if (tid == int(syscall(SYS_gettid))) return held + ", this one, which is waiting for it";
    if (syscall(SYS_tgkill, getpid(), tid, 0) == 0) {
        // A thread of this process holds a queue's lock only inside lock()..unlock(). Its
        // epoch, unchanged while the word stayed put, proves it did not just come back.
        const uint64_t before = locking_epoch(tid);
        if (before % 2) return "";
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen || locking_epoch(tid) != before) return "";
        return held + ", a thread of this process that is in no queue call";
    }
    // Thread ids of another pid namespace's users mean nothing here: nothing more to learn.
    if (foreign_users) return "?";
    if (kill(tid, 0) != 0) {
        if (errno == ESRCH) return held + ", which does not exist";
        // Only our effective uid may open the segment (segment_file.h).
        if (errno == EPERM) return held + ", a thread of another user";
    }
    std::vector<MapEntry> mine, theirs;
    if (read_mappings("self", mine) != 0) return "?";
    auto ours = std::find_if(mine.begin(), mine.end(),
                             [&](const MapEntry& m) { return m.start == uintptr_t(segment); });
    if (ours == mine.end()) return "?";
    int err = read_mappings(std::to_string(tid), theirs);
    if (err == ENOENT || err == ESRCH) return held + ", which does not exist";
    if (err != 0) return "?";
    for (const MapEntry& m : theirs)
        if (m.major == ours->major && m.minor == ours->minor && m.inode == ours->inode) return "";
    return held + ", which does not have the queue mapped";
}

}  // namespace

std::string HolderWatch::look(int seen, const int* word, const void* segment, uint64_t progress,
                              bool foreign_users) {
    const int tid = seen & FUTEX_TID_MASK;
    std::string problem = seen ? impossible_holder(tid, word, seen, segment, foreign_users) : "";
    if (problem != "" && problem != "?") return problem;
    // A holder that may be real. Corrupt only if it kept the lock, unchanged, while the queue
    // made no progress: asleep all the while (a holder never sleeps inside the lock) for
    // 2 s, or else for 5 s (one we may not look into) or 10 s (one running) in all. Stopped (a
    // signal, a debugger) or in uninterruptible sleep, the hold is explained: wait on.
    const double t = monotonic_seconds();
    uint64_t cpu = 0;
    const char state = tid ? thread_state(tid, &cpu) : 0;
    const bool explained = state == 'T' || state == 't' || state == 'D';
    if (seen != word_ || progress != progress_ || explained || since_ == 0) {
        word_ = seen;
        progress_ = progress;
        since_ = t;
        always_asleep_ = true;
        return "";
    }
    if (state != 'S') always_asleep_ = false;
    const double held = t - since_;
    const std::string by = "has been held for " + std::to_string(int(held)) + " s by thread " + std::to_string(tid);
    if (always_asleep_ && held >= 2.0) {
        return by + ", which has been asleep all that time (a user never sleeps holding it)";
    } else if (problem == "?") {
        if (held >= 5.0)
            return by + ", which is not stopped and which we cannot look into, while the queue made no progress "
                        "(a user holds it for microseconds)";
    } else if (held >= 10.0) {
        return by + ", which is not stopped, while the queue made no progress (a user holds it for microseconds)";
    }
    return "";
}
#endif

}  // namespace sage
