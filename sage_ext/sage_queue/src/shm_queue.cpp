// Implementation of the protocol described in include/shm_queue.h.
#include "shm_queue.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace sage {
namespace {

constexpr uint64_t kMagic = 0x3145554555514753ULL;  // "SGQUEUE1" in memory order
constexpr int kMaxSlots = 256;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kDefaultCapacity = 8ULL << 20;
constexpr uint64_t kMinCapacity = kPage;
constexpr uint64_t kMaxCapacity = 1ULL << 40;
constexpr double kMaxSpinSeconds = 20e-6;    // a futex wake costs ~10 us each way on small VMs
constexpr double kLivenessSlice = 0.02;      // how often a waiter checks for dead peers
constexpr uint64_t kLivenessAgeNs = 20000000; // a record held longer than this gets its holder checked
constexpr uint64_t kLargeRecord = 64 * 1024;  // signal consumers before starting a copy this long
constexpr double kInitWaitSeconds = 2.0;     // how long an opener waits for a creator to finish
constexpr int kLockSpins = 256;              // ~10 us of watching a held lock before sleeping on it

std::atomic<LockWaitHook> lock_wait_hook{nullptr};

enum RecordState : uint32_t {
    kReserved = 1, kCommitted = 2, kClaimed = 3, kFree = 4, kPad = 5, kAbandoned = 6,
};

struct RecordHeader {
    std::atomic<uint32_t> state;
    uint8_t tag;
    uint8_t unused0;
    uint16_t nparts;
    int32_t pid;       // producer
    int32_t claimer;   // consumer, once claimed
    uint64_t len;      // payload bytes
    uint64_t stamp_ns; // CLOCK_MONOTONIC_COARSE when reserved (then when claimed): age of the holder's hold
};
static_assert(sizeof(RecordHeader) == kRecordHeader, "record header must be 32 bytes");

struct Slot {  // one attached handle
    std::atomic<int32_t> pid;
    uint32_t unused;
    uint64_t outstanding;  // records this handle got and has not task_done'd
};

struct SlotCopy { int32_t pid; uint64_t outstanding; };

struct Counters {  // everything a locked section may change, saved by the journal
    uint64_t head;        // oldest byte not yet freed
    uint64_t read;        // next record to claim
    uint64_t tail;        // next byte to reserve
    uint64_t items;       // records reserved or committed, not yet claimed
    uint64_t unfinished;  // puts not yet matched by task_done
    Stats stats;
};

struct Journal {
    std::atomic<uint32_t> active;
    int32_t slot_index;
    Counters saved;
    SlotCopy saved_slot;
};

}  // namespace

struct Segment {
    uint64_t magic;
    uint32_t version;
    uint32_t header_bytes;
    uint64_t capacity;
    uint64_t maxsize;
    uint64_t ring_offset;
    uint64_t total_bytes;
    uint32_t persistent;
    int32_t creator_pid;
    std::atomic<uint32_t> ready;
    std::atomic<uint32_t> closed;
    std::atomic<uint32_t> unlinked;
    alignas(64) pthread_mutex_t mutex;
    Counters c;
    Journal journal;
    alignas(64) std::atomic<uint32_t> not_empty_seq;
    std::atomic<uint32_t> not_empty_sleepers;
    alignas(64) std::atomic<uint32_t> not_full_seq;
    std::atomic<uint32_t> not_full_sleepers;
    alignas(64) std::atomic<uint32_t> join_seq;
    std::atomic<uint32_t> join_sleepers;
    alignas(64) Slot slots[kMaxSlots];
};

double monotonic_seconds() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

namespace {

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
uint64_t record_size(uint64_t payload) { return round_up(kRecordHeader + payload, kRecordHeader); }
uint64_t ring_offset() { return round_up(sizeof(Segment), kPage); }


// Stamps for the liveness age of a hold (kLivenessAgeNs, 20 ms): the coarse clock's few
// milliseconds of resolution are plenty, and it costs a fraction of a precise read, which
// every put and get would otherwise pay. The same clock in every process.
uint64_t stamp_now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

// A call that may not block needs no deadline, nor the clock read for one.
double deadline_for(double timeout) { return timeout == 0 ? 0 : timeout < 0 ? INFINITY : monotonic_seconds() + timeout; }

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

long futex_wait(std::atomic<uint32_t>* word, uint32_t expected, double seconds) {
    timespec rel{}, *relp = nullptr;
    if (std::isfinite(seconds)) {
        rel.tv_sec = time_t(seconds);
        rel.tv_nsec = long((seconds - double(rel.tv_sec)) * 1e9);
        relp = &rel;
    }
    // FUTEX_WAIT's relative timeout is measured on CLOCK_MONOTONIC.
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, relp, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// Advance a sequence word and wake sleepers; no syscall when nobody sleeps.
void signal(std::atomic<uint32_t>& seq, std::atomic<uint32_t>& sleepers) {
    seq.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&seq);
}

// A zombie still answers kill(pid, 0), so read its state from /proc as well.
bool pid_alive(int32_t pid) {
    if (pid <= 0) return false;
    if (kill(pid, 0) != 0 && errno == ESRCH) return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno != ENOENT;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return true;
    buf[n] = 0;
    const char* paren = strrchr(buf, ')');
    if (!paren || paren[1] == 0 || paren[2] == 0) return true;
    char state = paren[2];
    return state != 'Z' && state != 'X';
}

// A holder is checked only once its hold is old: a live peer is usually mid-copy, and
// the check costs a syscall and a /proc read. CLOCK_MONOTONIC(_COARSE) is the same for every process.
bool holder_dead(const RecordHeader* r, int32_t holder, uint64_t now) {
    return now - r->stamp_ns >= kLivenessAgeNs && !pid_alive(holder);
}

[[noreturn]] void throw_errno(const std::string& what, int err) {
    throw SystemError(what + ": " + strerror(err), err);
}

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

// The epoch of thread `tid` of this process: odd while it is inside lock()..unlock(); an
// odd value too when we cannot tell (no entry because the table filled up).
uint64_t locking_epoch(int32_t tid) {
    for (auto& e : locking_threads)
        if (e.tid.load(std::memory_order_acquire) == tid) return e.epoch.load(std::memory_order_seq_cst);
    return locking_table_full.load() ? 1 : 0;
}

#if defined(__GLIBC__)
// -- who may hold the lock: the checks lock() makes while it waits

constexpr const char* kCorruptLockFix = ": the segment is corrupt; remove it with `python -m "
                                        "sage_ext.sage_queue.python.sage_queue_manager cleanup --force`";

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

struct Mapping { unsigned long start; unsigned major, minor; unsigned long inode; };

// Each mapping's start, device and inode in /proc/<pid>/maps; returns 0 or errno.
int read_mappings(const std::string& pid, std::vector<Mapping>& out) {
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
        Mapping m{};
        if (sscanf(line.c_str(), "%lx-%*x %*s %*x %x:%x %lu", &m.start, &m.major, &m.minor, &m.inode) == 4)
            out.push_back(m);
    }
    return err;
}

// Stopped by a signal or a debugger: a long hold is explained.
bool thread_stopped(int tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", tid);
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    buf[n > 0 ? n : 0] = 0;
    const char* paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
}

// Why thread `tid`, named by `word` (the lock word, read as `seen`), cannot hold the lock
// of the segment mapped at `segment`: "" if it may, "?" if we may not look (another user's
// process).
std::string impossible_holder(int tid, const int* word, int seen, const void* segment) {
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
    if (kill(tid, 0) != 0 && errno == ESRCH) return held + ", which does not exist";
    std::vector<Mapping> mine, theirs;
    if (read_mappings("self", mine) != 0) return "?";
    auto ours = std::find_if(mine.begin(), mine.end(),
                             [&](const Mapping& m) { return m.start == uintptr_t(segment); });
    if (ours == mine.end()) return "?";
    int err = read_mappings(std::to_string(tid), theirs);
    if (err == ENOENT || err == ESRCH) return held + ", which does not exist";
    if (err != 0) return "?";
    for (const Mapping& m : theirs)
        if (m.major == ours->major && m.minor == ours->minor && m.inode == ours->inode) return "";
    return held + ", which does not have the queue mapped";
}
#endif

}  // namespace

// A locked section: the lock plus, unless journal=false, the undo journal. If the
// section throws (a corrupt record, say), its changes are rolled back and the lock
// released, exactly as if its holder had died.
class ShmQueue::Section {
public:
    Section(ShmQueue& q, int slot, bool journal = true)
        : q_(q), journal_(journal), exceptions_(std::uncaught_exceptions()) {
        q_.lock();
        if (journal_) q_.begin(slot);
    }
    ~Section() {
        if (journal_) {
            // A destructor must not throw: rolling back its own journal cannot fail.
            if (std::uncaught_exceptions() > exceptions_) q_.rollback_locked(/*own=*/true);
            q_.end();
        }
        q_.unlock();
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

private:
    ShmQueue& q_;
    const bool journal_;
    const int exceptions_;
};

// ---------------------------------------------------------------- names

std::string ShmQueue::segment_path(const std::string& name) { return "/sage_queue." + name; }

void ShmQueue::validate_name(const std::string& name) {
    if (name.empty()) throw InvalidArgument("queue name must not be empty");
    if (name.size() > kMaxNameLength)
        throw InvalidArgument("queue name is " + std::to_string(name.size()) + " characters long; the limit is " +
                              std::to_string(kMaxNameLength));
    for (unsigned char ch : name) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                  ch == '-' || ch == '.';
        if (!ok) {
            char shown[16];
            if (ch >= 0x20 && ch < 0x7f) snprintf(shown, sizeof shown, "'%c'", ch);
            else snprintf(shown, sizeof shown, "byte 0x%02x", ch);
            throw InvalidArgument(std::string("queue name contains ") + shown +
                                  "; use only letters, digits, '_', '-' and '.'");
        }
    }
    if (name.find("..") != std::string::npos || name == ".")
        throw InvalidArgument("queue name must not be '.' or contain '..'");
}

// ---------------------------------------------------------------- lifecycle

ShmQueue::ShmQueue(const std::string& name, uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                   OpenMode mode)
    : name_(name), pid_(getpid()) {
    validate_name(name);
    if (capacity_bytes != 0 && (capacity_bytes < kMinCapacity || capacity_bytes > kMaxCapacity))
        throw InvalidArgument("capacity_bytes must be between " + std::to_string(kMinCapacity) + " and " +
                              std::to_string(kMaxCapacity) + ", got " + std::to_string(capacity_bytes));
    if (maxsize > (1ULL << 40)) throw InvalidArgument("maxsize is too large: " + std::to_string(maxsize));
    const std::string path = segment_path(name);

    for (int attempt = 0; attempt < 5; ++attempt) {
        bool created = false;
        int fd = -1;
        if (mode == OpenMode::open_or_create || mode == OpenMode::create_only) {
            fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd >= 0) created = true;
            else if (errno != EEXIST || mode == OpenMode::create_only)
                throw_errno("cannot create queue '" + name + "'", errno);
        }
        if (!created) {
            fd = shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
            if (fd < 0) {
                if (errno == ENOENT && mode == OpenMode::open_or_create) continue;  // unlinked meanwhile
                throw_errno("cannot open queue '" + name + "'", errno);
            }
        }

        if (created) {
            const uint64_t cap = round_up(capacity_bytes ? capacity_bytes : kDefaultCapacity, kPage);
            const uint64_t total = ring_offset() + cap;
            fchmod(fd, 0600);  // never wider than owner-only, whatever the umask
            int rc = ftruncate(fd, off_t(total)) == 0 ? 0 : errno;
            // Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later.
            if (rc == 0) rc = posix_fallocate(fd, 0, off_t(total));
            if (rc != 0) {
                ::close(fd);
                shm_unlink(path.c_str());
                if (rc == ENOSPC)
                    throw SystemError("not enough room in /dev/shm for queue '" + name + "' (" +
                                      std::to_string(total) + " bytes); free space there, pass a smaller "
                                      "capacity_bytes, or give the container more (docker run --shm-size=256m)", rc);
                throw_errno("cannot size queue '" + name + "'", rc);
            }
            void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
            ::close(fd);
            if (mem == MAP_FAILED) {
                int e = errno;
                shm_unlink(path.c_str());
                throw_errno("cannot map queue '" + name + "'", e);
            }
            seg_ = static_cast<Segment*>(mem);
            map_size_ = total;
            seg_->magic = kMagic;
            seg_->version = kLayoutVersion;
            seg_->header_bytes = sizeof(Segment);
            seg_->capacity = cap;
            seg_->maxsize = maxsize;
            seg_->ring_offset = ring_offset();
            seg_->total_bytes = total;
            seg_->persistent = persistent ? 1 : 0;
            seg_->creator_pid = pid_;
            pthread_mutexattr_t attr;
            pthread_mutexattr_init(&attr);
            pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
            pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
            pthread_mutex_init(&seg_->mutex, &attr);
            pthread_mutexattr_destroy(&attr);
            seg_->ready.store(1, std::memory_order_release);
        } else {
            // The creator may still be sizing or initialising the segment.
            const double give_up = monotonic_seconds() + kInitWaitSeconds;
            struct stat st{};
            for (;;) {
                if (fstat(fd, &st) != 0) {
                    int e = errno;
                    ::close(fd);
                    throw_errno("cannot stat queue '" + name + "'", e);
                }
                if (st.st_size > 0 && uint64_t(st.st_size) < ring_offset() + kMinCapacity) {
                    ::close(fd);  // a creator sizes the file in one step: this one is not ours
                    throw CorruptSegment("cannot attach to queue '" + name + "': its file is only " +
                                         std::to_string(st.st_size) + " bytes, too small to be a sage_queue");
                }
                if (uint64_t(st.st_size) >= ring_offset() + kMinCapacity) {
                    void* probe = mmap(nullptr, ring_offset(), PROT_READ, MAP_SHARED, fd, 0);
                    if (probe == MAP_FAILED) break;
                    const Segment* head = static_cast<Segment*>(probe);
                    bool ready = head->ready.load(std::memory_order_acquire) == 1;
                    // A creator's freshly sized file is all zeros: other bytes mean it is not ours.
                    bool foreign = head->magic != 0 && head->magic != kMagic;
                    munmap(probe, ring_offset());
                    if (ready || foreign) break;
                }
                if (monotonic_seconds() > give_up) {
                    ::close(fd);
                    throw CorruptSegment("queue '" + name + "' was never initialised (its creator may have died "
                                         "while creating it); remove it with `python -m "
                                         "sage_ext.sage_queue.python.sage_queue_manager cleanup --force`");
                }
                usleep(1000);  // only while another process is creating the segment
            }
            const uint64_t size = uint64_t(st.st_size);
            void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
            ::close(fd);
            if (mem == MAP_FAILED) throw_errno("cannot map queue '" + name + "'", errno);
            Segment* s = static_cast<Segment*>(mem);
            std::string problem;
            if (s->magic != kMagic) problem = "it is not a sage_queue segment (bad magic)";
            else if (s->version != kLayoutVersion)
                problem = "its layout version is " + std::to_string(s->version) + ", this build reads " +
                          std::to_string(kLayoutVersion);
            else if (s->header_bytes != sizeof(Segment) || s->ring_offset != ring_offset())
                problem = "its header size does not match this build";
            else if (s->capacity < kMinCapacity || s->capacity > kMaxCapacity || s->capacity % kPage ||
                     s->total_bytes != s->ring_offset + s->capacity || s->total_bytes != size)
                problem = "its sizes are inconsistent (capacity " + std::to_string(s->capacity) + ", file " +
                          std::to_string(size) + " bytes)";
            else if (s->maxsize > (1ULL << 40)) problem = "its maxsize is out of range";
            if (!problem.empty()) {
                munmap(mem, size);
                throw CorruptSegment("cannot attach to queue '" + name + "': " + problem);
            }
            seg_ = s;
            map_size_ = size;
            if (capacity_bytes && round_up(capacity_bytes, kPage) != s->capacity) {
                uint64_t have = s->capacity;
                munmap(mem, size);
                seg_ = nullptr;
                throw InvalidArgument("queue '" + name + "' exists with capacity_bytes=" + std::to_string(have) +
                                      ", not " + std::to_string(capacity_bytes) +
                                      "; open it without capacity_bytes or use another name");
            }
            if (maxsize && maxsize != s->maxsize) {
                uint64_t have = s->maxsize;
                munmap(mem, size);
                seg_ = nullptr;
                throw InvalidArgument("queue '" + name + "' exists with maxsize=" + std::to_string(have) + ", not " +
                                      std::to_string(maxsize) + "; open it without maxsize or use another name");
            }
        }
        ring_ = reinterpret_cast<uint8_t*>(seg_) + seg_->ring_offset;

        if (mode == OpenMode::inspect) return;  // no slot, never unlinks
        reap_dead_slots();
        bool sane, gone;
        int slot = -1;
        {
            Section section(*this, -1);
            const Counters& c = seg_->c;
            sane = c.head <= c.read && c.read <= c.tail && c.tail - c.head <= seg_->capacity &&
                   c.head % kRecordHeader == 0 && c.read % kRecordHeader == 0 && c.tail % kRecordHeader == 0;
            gone = seg_->unlinked.load() != 0;
            if (sane && !gone) slot = take_slot_locked();
        }
        if (!sane) {
            munmap(seg_, map_size_);
            seg_ = nullptr;
            throw CorruptSegment("cannot attach to queue '" + name + "': its ring offsets are inconsistent");
        }
        if (!gone) {
            slot_ = slot;
            return;
        }
        munmap(seg_, map_size_);  // raced with the last user's unlink: start over
        seg_ = nullptr;
        if (mode == OpenMode::open_only) throw SystemError("queue '" + name + "' was just removed", ENOENT);
    }
    throw SystemError("queue '" + name + "' keeps being removed while opening it", EAGAIN);
}

ShmQueue::~ShmQueue() {
    try {
        detach();
    } catch (...) {
        // never throw from a destructor; the next user reaps our slot
    }
}

ShmQueue::InUse::InUse(ShmQueue& q) : q_(q) {
    q_.users_.fetch_add(1);
    if (!q_.seg_ || q_.detaching_.load()) {
        q_.users_.fetch_sub(1);
        throw InvalidArgument("queue '" + q_.name_ + "' is detached from this process");
    }
}

ShmQueue::InUse::~InUse() { q_.users_.fetch_sub(1); }

void ShmQueue::detach() {
    if (!seg_ || detaching_.exchange(true)) return;
    // Wake this process's blocked callers (they see detaching_) and wait until they leave.
    while (users_.load() > 0) {
        signal(seg_->not_empty_seq, seg_->not_empty_sleepers);
        signal(seg_->not_full_seq, seg_->not_full_sleepers);
        signal(seg_->join_seq, seg_->join_sleepers);
        usleep(200);  // only while another thread of ours is leaving a call
    }
    if (slot_ >= 0 && getpid() == pid_) {
        Section section(*this, slot_);
        Slot& mine = seg_->slots[slot_];
        mine.outstanding = 0;  // our unfinished tasks stay counted: any process may task_done them
        mine.pid.store(0);
        bool anyone = false;
        for (auto& s : seg_->slots) {
            int32_t p = s.pid.load();
            if (p && pid_alive(p)) { anyone = true; break; }
        }
        bool remove = !anyone && !seg_->persistent && seg_->unlinked.load() == 0;
        if (remove) {
            seg_->unlinked.store(1);
            shm_unlink(segment_path(name_).c_str());
        }
    }
    munmap(seg_, map_size_);
    seg_ = nullptr;
    ring_ = nullptr;
    slot_ = -1;
}

bool ShmQueue::detaching() const { return detaching_.load(std::memory_order_relaxed); }

void ShmQueue::unlink() {
    if (!seg_) throw InvalidArgument("queue is detached");
    if (seg_->unlinked.exchange(1) == 0) shm_unlink(segment_path(name_).c_str());
}

void ShmQueue::after_fork_in_child() {
    if (!seg_ || getpid() == pid_) return;
    pid_ = getpid();
    users_.store(0);  // calls in flight belonged to the parent's other threads
    slot_ = -1;
    if (seg_->unlinked.load()) return;
    reap_dead_slots();  // children that came and went before us free their slots
    Section section(*this, -1);
    slot_ = take_slot_locked();
}

int ShmQueue::take_slot_locked() {
    for (int i = 0; i < kMaxSlots; ++i) {
        if (seg_->slots[i].pid.load() == 0) {
            seg_->journal.slot_index = i;
            seg_->journal.saved_slot = {0, seg_->slots[i].outstanding};
            seg_->slots[i].outstanding = 0;
            seg_->slots[i].pid.store(pid_);
            return i;
        }
    }
    throw SystemError("queue '" + name_ + "' already has " + std::to_string(kMaxSlots) +
                      " attached handles; detach some first", EMFILE);
}

void ShmQueue::reap_dead_slots() {
    for (int i = 0; i < kMaxSlots; ++i) {
        int32_t p = seg_->slots[i].pid.load();
        if (p == 0 || p == pid_ || pid_alive(p)) continue;
        bool zero = false;
        {
            Section section(*this, i);
            Slot& s = seg_->slots[i];
            if (s.pid.load() == p) {
                Counters& c = seg_->c;
                uint64_t lost = s.outstanding < c.unfinished ? s.outstanding : c.unfinished;
                c.unfinished -= lost;
                c.stats.written_off_tasks += lost;
                s.outstanding = 0;
                s.pid.store(0);
                zero = lost && c.unfinished == 0;
            }
        }
        if (zero) signal(seg_->join_seq, seg_->join_sleepers);
    }
}

// ---------------------------------------------------------------- locking

void ShmQueue::lock() {
    // Uncontended: one atomic, as in pthread_mutex_lock. Contended: wait in slices and after
    // each look at who holds the lock: a holder is a live thread with this segment mapped, and
    // holds it for microseconds. A lock word naming anything else (a corrupt segment) would
    // otherwise be waited on forever.
#if defined(__GLIBC__)
    // Lock only a mutex of the type the creator made.
    if (__atomic_load_n(&seg_->mutex.__data.__kind, __ATOMIC_RELAXED) != robust_shared_mutex_kind())
        throw CorruptSegment("the lock of queue '" + name_ + "' is not a robust process-shared mutex" +
                             kCorruptLockFix);
#endif
    enter_locking();
    struct LeaveUnlessLocked {  // every path that throws leaves without the lock
        bool locked = false;
        ~LeaveUnlessLocked() {
            if (!locked) leave_locking();
        }
    } leave;
    int rc = pthread_mutex_trylock(&seg_->mutex);
    // A holder keeps the lock for microseconds: watch the word a little before sleeping.
    for (int i = 0; rc == EBUSY && i < kLockSpins; ++i) {
        cpu_relax();
#if defined(__GLIBC__)
        if (__atomic_load_n(&seg_->mutex.__data.__lock, __ATOMIC_RELAXED) != 0) continue;
#endif
        rc = pthread_mutex_trylock(&seg_->mutex);
    }
    if (rc == EBUSY) {
        if (LockWaitHook hook = lock_wait_hook.load(std::memory_order_acquire)) hook();
    }
    int stuck_word = 0;        // a holder we could not look into, and since when it held the lock
    uint64_t stuck_progress = 0;
    double stuck_since = 0;
    while (rc == EBUSY || rc == ETIMEDOUT) {
#if defined(__GLIBC__)
        if (rc == ETIMEDOUT) {
            auto word = [this] { return __atomic_load_n(&seg_->mutex.__data.__lock, __ATOMIC_ACQUIRE); };
            const int seen = word();
            std::string problem =
                seen ? impossible_holder(seen & FUTEX_TID_MASK, &seg_->mutex.__data.__lock, seen, seg_) : "";
            const uint64_t progress = uint64_t(seg_->not_empty_seq.load()) + seg_->not_full_seq.load() +
                                      seg_->join_seq.load();
            if (problem == "?") {
                // A holder we may not look into: corrupt only if it kept the lock, running,
                // for seconds while the queue made no progress.
                problem.clear();
                const double t = monotonic_seconds();
                if (seen != stuck_word || progress != stuck_progress || thread_stopped(seen & FUTEX_TID_MASK)) {
                    stuck_word = seen;
                    stuck_progress = progress;
                    stuck_since = t;
                } else if (t - stuck_since >= 5.0) {
                    problem = "has been held for " + std::to_string(int(t - stuck_since)) + " s by thread " +
                              std::to_string(seen & FUTEX_TID_MASK) +
                              ", which is not stopped and whose mappings we may not read, while the queue "
                              "made no progress (a user holds it for microseconds)";
                }
            }
            // Only a word that stayed put while we looked: a holder may have just left.
            if (!problem.empty() && word() == seen)
                throw CorruptSegment("the lock of queue '" + name_ + "' " + problem + kCorruptLockFix);
        }
#endif
        timespec until;
        clock_gettime(CLOCK_REALTIME, &until);  // the clock pthread_mutex_timedlock measures on
        until.tv_nsec += 200000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000;
        }
        rc = pthread_mutex_timedlock(&seg_->mutex, &until);
    }
    if (rc == EOWNERDEAD) {
        try {
            recover_locked();
        } catch (...) {
            // Unlocked without being made consistent, the mutex stays unrecoverable: every
            // later user gets the same clear error instead of a hang.
            pthread_mutex_unlock(&seg_->mutex);
            throw;
        }
        pthread_mutex_consistent(&seg_->mutex);
    } else if (rc == ENOTRECOVERABLE) {
        throw CorruptSegment("the lock of queue '" + name_ + "' is unrecoverable");
    } else if (rc != 0) {
        throw_errno("cannot lock queue '" + name_ + "'", rc);
    }
    leave.locked = true;
}

void set_lock_wait_hook(LockWaitHook hook) { lock_wait_hook.store(hook, std::memory_order_release); }

void ShmQueue::unlock() {
    pthread_mutex_unlock(&seg_->mutex);
    leave_locking();
}

// Every locked section runs between begin() and end(): a holder killed inside it
// leaves the journal active, and the next locker rolls its changes back.
void ShmQueue::begin(int slot) {
    Journal& j = seg_->journal;
    j.saved = seg_->c;
    j.slot_index = slot;
    if (slot >= 0) j.saved_slot = {seg_->slots[slot].pid.load(), seg_->slots[slot].outstanding};
    j.active.store(1, std::memory_order_relaxed);
    // The journal before any change it covers (no full fence needed: stores only).
    std::atomic_thread_fence(std::memory_order_release);
}

void ShmQueue::end() { seg_->journal.active.store(0, std::memory_order_release); }

void ShmQueue::recover_locked() {
    rollback_locked(/*own=*/false);
    seg_->c.stats.lock_recoveries++;
}

// own: this process's section is unwinding, and its journal holds the counters as they
// were (consistent or not, they are what the caller found). Otherwise the journal is a
// dead holder's, in shared memory that anything may have written: replay it only if it
// is consistent.
void ShmQueue::rollback_locked(bool own) {
    Journal& j = seg_->journal;
    if (j.active.load()) {
        Counters& c = seg_->c;
        const Counters& saved = j.saved;
        const uint64_t cap = seg_->capacity;
        if (!own && !(saved.head <= saved.read && saved.read <= saved.tail && saved.tail - saved.head <= cap &&
              saved.head % kRecordHeader == 0 && saved.read % kRecordHeader == 0 &&
              saved.tail % kRecordHeader == 0 && saved.items <= cap / kRecordHeader))
            throw CorruptSegment("queue '" + name_ + "' has a corrupt undo journal; remove it with `python -m "
                                 "sage_ext.sage_queue.python.sage_queue_manager cleanup --force`");
        const uint64_t advanced_head = c.head;
        c = j.saved;
        // Never move head back: the space the section freed may already hold the headers
        // of its own new reservation. Advancing head only passes consumed records, so the
        // advance stands; an empty-ring restart (past the restored read) proves every record
        // before read was consumed, so head goes to read.
        if (advanced_head > c.head) c.head = std::min(advanced_head, c.read);
        if (j.slot_index >= 0 && j.slot_index < kMaxSlots) {
            seg_->slots[j.slot_index].pid.store(j.saved_slot.pid);
            seg_->slots[j.slot_index].outstanding = j.saved_slot.outstanding;
        }
        // Past the restored read pointer a record can only be reserved, committed or
        // padding: undo any claim or abandonment the dead section made there.
        // Bounded by the ring's size, whatever the counters say.
        for (uint64_t off = c.read, end = c.tail - c.read > cap ? c.read + cap : c.tail; off < end;) {
            auto* r = reinterpret_cast<RecordHeader*>(ring_ + off % cap);
            uint32_t st = r->state.load();
            if (st == kClaimed) r->state.store(kCommitted);
            else if (st == kAbandoned) r->state.store(kReserved);
            uint64_t size = record_size(r->len);
            if (r->len > cap || off % cap + size > cap) break;  // corrupt: stop, claim() will report it
            off += size;
        }
        j.active.store(0);
    }
}

// ---------------------------------------------------------------- waiting

Status ShmQueue::wait_on(void* seq_word, void* sleepers_word, uint32_t seen, double deadline,
                         bool check_liveness) {
    auto& seq = *static_cast<std::atomic<uint32_t>*>(seq_word);
    auto& sleepers = *static_cast<std::atomic<uint32_t>*>(sleepers_word);
    const double start = monotonic_seconds();
    // Spin briefly: most waits end within microseconds, and sleeping costs a syscall each way.
    // The budget adapts to how long waits really last: if the event came within the longest
    // spin, spinning pays and the budget is full; if it came later (say the peer needed this
    // very core), spinning only burns it, and the budget halves.
    const double budget = spin_budget_.load(std::memory_order_relaxed);
    for (int i = 0;; ++i) {
        if (seq.load(std::memory_order_acquire) != seen) return Status::ok;
        cpu_relax();
        if ((i & 63) == 63) {
            double t = monotonic_seconds();
            if (t >= deadline) return Status::timeout;
            if (t - start >= budget) break;
        }
    }
    auto learn = [&] {
        spin_budget_.store(monotonic_seconds() - start <= kMaxSpinSeconds ? kMaxSpinSeconds : budget / 2,
                           std::memory_order_relaxed);
    };
    for (;;) {
        double t = monotonic_seconds();
        if (t >= deadline) return Status::timeout;
        double left = deadline - t;
        if (check_liveness && left > kLivenessSlice) left = kLivenessSlice;
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        bool interrupted = false;
        if (seq.load(std::memory_order_seq_cst) == seen)
            interrupted = futex_wait(&seq, seen, std::isfinite(left) ? left : INFINITY) != 0 && errno == EINTR;
        sleepers.fetch_sub(1, std::memory_order_seq_cst);
        if (interrupted) return Status::interrupted;  // the caller runs the signal's handler
        if (seq.load(std::memory_order_acquire) != seen) {
            learn();
            return Status::ok;
        }
        if (check_liveness && monotonic_seconds() - t >= kLivenessSlice * 0.9) return Status::ok;  // caller rechecks peers
    }
}

// ---------------------------------------------------------------- put

bool ShmQueue::reclaim_space_locked() {
    Counters& c = seg_->c;
    const uint64_t t = stamp_now_ns();
    const uint64_t cap = seg_->capacity;
    bool moved = false;
    while (c.head < c.read) {
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + c.head % cap);
        uint32_t st = r->state.load(std::memory_order_acquire);
        uint64_t size = record_size(r->len);
        if (r->len > cap || c.head % cap + size > cap || c.head + size > c.read)
            throw CorruptSegment("queue '" + name_ + "' has a corrupt record at offset " + std::to_string(c.head));
        if (st == kClaimed) {
            if (!holder_dead(r, r->claimer, t)) break;
            r->state.store(kFree);  // its consumer died while copying it out
            c.stats.reclaimed_records++;
        } else if (st != kFree && st != kPad && st != kAbandoned) {
            throw CorruptSegment("queue '" + name_ + "' has a record in state " + std::to_string(st) +
                                 " behind its read pointer");
        }
        c.head += size;
        moved = true;
    }
    return moved;
}

Status ShmQueue::put_many(const Message* msgs, size_t n, double timeout) {
    if (!seg_) throw InvalidArgument("queue is detached");
    if (n == 0) return Status::ok;
    const uint64_t cap = seg_->capacity;
    // Per-thread scratch: a put must not allocate (no Python runs inside, so no reentry).
    thread_local std::vector<uint64_t> sizes, offsets;
    sizes.resize(n);
    offsets.resize(n);
    uint64_t total = 0, payload_total = 0;
    for (size_t i = 0; i < n; ++i) {
        uint64_t len = msgs[i].nparts > 1 ? 8ULL * msgs[i].nparts : 0;
        for (uint16_t k = 0; k < msgs[i].nparts; ++k) len += msgs[i].parts[k].len;
        sizes[i] = len;
        payload_total += len;
        total += record_size(len);
    }
    if (total > cap)
        throw InvalidArgument((n == 1 ? "item of " : "batch of ") + std::to_string(payload_total) +
                              " bytes (" + std::to_string(total) + " in the ring) is larger than the ring of queue '" +
                              name_ + "' (" + std::to_string(cap) + " bytes); create it with a larger capacity_bytes");
    if (seg_->maxsize && n > seg_->maxsize)
        throw InvalidArgument("batch of " + std::to_string(n) + " items exceeds maxsize=" +
                              std::to_string(seg_->maxsize) + " of queue '" + name_ + "'");

    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        Status st = Status::timeout;
        {
            Section section(*this, -1);
            seen = seg_->not_full_seq.load(std::memory_order_seq_cst);
            Counters& c = seg_->c;
            if (seg_->closed.load()) {
                st = Status::closed;
            } else if (!seg_->maxsize || c.items + n <= seg_->maxsize) {
                for (int pass = 0; pass < 2 && st != Status::ok; ++pass) {
                    if (pass == 1 && !reclaim_space_locked()) break;
                    if (c.head == c.tail && c.tail % cap) {
                        // Empty ring: restart at a ring boundary so a batch that fits never needs padding.
                        c.head = c.read = c.tail = round_up(c.tail, cap);
                    }
                    uint64_t p = c.tail;
                    for (size_t i = 0; i < n; ++i) {
                        uint64_t size = record_size(sizes[i]);
                        if (p % cap + size > cap) p += cap - p % cap;
                        offsets[i] = p;
                        p += size;
                    }
                    if (p - c.head <= cap) {
                        uint64_t q = c.tail;
                        const uint64_t stamp = stamp_now_ns();
                        for (size_t i = 0; i < n; ++i) {
                            if (offsets[i] != q) {  // padding up to the ring's end
                                auto* pad = reinterpret_cast<RecordHeader*>(ring_ + q % cap);
                                pad->len = offsets[i] - q - kRecordHeader;
                                pad->pid = pid_;
                                pad->state.store(kPad, std::memory_order_relaxed);
                            }
                            auto* r = reinterpret_cast<RecordHeader*>(ring_ + offsets[i] % cap);
                            r->tag = msgs[i].tag;
                            r->nparts = msgs[i].nparts;
                            r->pid = pid_;
                            r->claimer = 0;
                            r->len = sizes[i];
                            r->stamp_ns = stamp;
                            r->state.store(kReserved, std::memory_order_relaxed);
                            q = offsets[i] + record_size(sizes[i]);
                        }
                        c.tail = p;
                        c.items += n;
                        c.unfinished += n;
                        c.stats.puts += n;
                        c.stats.bytes_put += payload_total;
                        st = Status::ok;
                    }
                }
            }
        }
        if (st == Status::ok) break;
        if (detaching()) return Status::closed;
        if (st == Status::closed || timeout == 0) return st;
        // Wake now and then while blocked: the consumer holding the oldest record may die
        // without a word, and only a look at its pid tells.
        Status w = wait_on(&seg_->not_full_seq, &seg_->not_full_sleepers, seen, deadline, true);
        if (w != Status::ok) return w;
    }

    // Copy outside the lock, then commit: a record is visible only once complete.
    for (size_t i = 0; i < n; ++i) {
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + offsets[i] % cap);
        uint8_t* dst = reinterpret_cast<uint8_t*>(r) + kRecordHeader;
        const Message& m = msgs[i];
        if (m.nparts > 1) {
            for (uint16_t k = 0; k < m.nparts; ++k) {
                uint64_t len = m.parts[k].len;
                memcpy(dst, &len, 8);
                dst += 8;
            }
        }
        for (uint16_t k = 0; k < m.nparts; ++k) {
            if (m.parts[k].len) memcpy(dst, m.parts[k].data, m.parts[k].len);
            dst += m.parts[k].len;
        }
        r->state.store(kCommitted, std::memory_order_release);
        // Publish what is committed before a long copy, in case we die during it.
        if (i + 1 == n || sizes[i + 1] >= kLargeRecord) signal(seg_->not_empty_seq, seg_->not_empty_sleepers);
    }
    return Status::ok;
}

// ---------------------------------------------------------------- get

Status ShmQueue::claim(size_t max_items, uint64_t max_bytes, double timeout, std::vector<RecordView>& out) {
    if (!seg_) throw InvalidArgument("queue is detached");
    out.clear();
    if (max_items == 0) return Status::ok;
    const uint64_t cap = seg_->capacity;
    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        bool corrupt = false, drained;
        uint64_t at;
        {
            Section section(*this, slot_);
            seen = seg_->not_empty_seq.load(std::memory_order_seq_cst);
            Counters& c = seg_->c;
            uint64_t bytes = 0, t = 0;
            while (out.size() < max_items && c.read < c.tail) {
                auto* r = reinterpret_cast<RecordHeader*>(ring_ + c.read % cap);
                uint32_t st = r->state.load(std::memory_order_acquire);
                uint64_t size = record_size(r->len);
                if (r->len > cap || c.read % cap + size > cap || c.read + size > c.tail) {
                    corrupt = true;
                    break;
                }
                if (st == kPad) {
                    c.read += size;
                } else if (st == kReserved) {
                    if (!t) t = stamp_now_ns();
                    if (!holder_dead(r, r->pid, t)) break;
                    r->state.store(kAbandoned);  // its producer died before committing it
                    c.read += size;
                    c.items--;
                    if (c.unfinished) c.unfinished--;
                    c.stats.abandoned_records++;
                } else if (st == kCommitted) {
                    if (!out.empty() && bytes + r->len > max_bytes) break;
                    if (!t) t = stamp_now_ns();
                    r->claimer = pid_;
                    r->stamp_ns = t;
                    r->state.store(kClaimed, std::memory_order_relaxed);
                    uint8_t* payload = reinterpret_cast<uint8_t*>(r) + kRecordHeader;
                    out.push_back({c.read, r->tag, r->nparts, payload, r->len});
                    c.read += size;
                    c.items--;
                    bytes += r->len;
                } else {
                    corrupt = true;
                    break;
                }
            }
            if (!out.empty()) {
                if (slot_ >= 0) seg_->slots[slot_].outstanding += out.size();
                c.stats.gets += out.size();
                c.stats.bytes_got += bytes;
            }
            drained = c.read == c.tail;
            at = c.read;
        }
        if (corrupt && out.empty())
            throw CorruptSegment("queue '" + name_ + "' has a corrupt record at offset " + std::to_string(at));
        if (!out.empty()) {
            // The ring changed under a blocked producer: let it look again (its maxsize room, or
            // a claimed record whose consumer may now die before freeing it).
            if (seg_->not_full_sleepers.load()) signal(seg_->not_full_seq, seg_->not_full_sleepers);
            return Status::ok;
        }
        if ((drained && seg_->closed.load()) || detaching()) return Status::closed;
        if (timeout == 0) return Status::timeout;
        // Blocked on a reserved record: wake now and then, its producer may die mid-copy.
        Status w = wait_on(&seg_->not_empty_seq, &seg_->not_empty_sleepers, seen, deadline, !drained);
        if (w != Status::ok) return w;
    }
}

void ShmQueue::release(const std::vector<RecordView>& records) {
    if (!seg_ || records.empty()) return;
    for (const RecordView& v : records) {
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + v.offset % seg_->capacity);
        r->state.store(kFree, std::memory_order_release);
    }
    signal(seg_->not_full_seq, seg_->not_full_sleepers);
}

// ---------------------------------------------------------------- tasks, close, info

void ShmQueue::task_done(uint64_t n) {
    if (!seg_) throw InvalidArgument("queue is detached");
    bool zero;
    {
        Section section(*this, slot_);
        Counters& c = seg_->c;
        if (c.unfinished < n) throw InvalidArgument("task_done() called too many times");
        c.unfinished -= n;
        if (slot_ >= 0) {
            uint64_t& mine = seg_->slots[slot_].outstanding;
            mine -= mine < n ? mine : n;
        }
        zero = c.unfinished == 0;
    }
    if (zero) signal(seg_->join_seq, seg_->join_sleepers);
}

Status ShmQueue::join(double timeout) {
    if (!seg_) throw InvalidArgument("queue is detached");
    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        uint64_t left;
        {
            Section section(*this, -1, false);
            seen = seg_->join_seq.load(std::memory_order_seq_cst);
            left = seg_->c.unfinished;
        }
        if (left == 0) return Status::ok;
        if (detaching()) return Status::closed;
        if (timeout == 0) return Status::timeout;
        // Wake up now and then to write off the tasks of consumers that died.
        Status w = wait_on(&seg_->join_seq, &seg_->join_sleepers, seen, deadline, true);
        if (w != Status::ok) return w;
        reap_dead_slots();
    }
}

void ShmQueue::close() {
    if (!seg_) throw InvalidArgument("queue is detached");
    seg_->closed.store(1);
    signal(seg_->not_empty_seq, seg_->not_empty_sleepers);
    signal(seg_->not_full_seq, seg_->not_full_sleepers);
    signal(seg_->join_seq, seg_->join_sleepers);
}

uint64_t ShmQueue::qsize() const {
    if (!seg_) throw InvalidArgument("queue is detached");
    if (seg_->journal.active.load(std::memory_order_acquire)) {
        // A section is under way, or its holder died inside it: the lock settles (and recovers) it.
        Section section(*const_cast<ShmQueue*>(this), -1, false);
        return seg_->c.items;
    }
    return __atomic_load_n(&seg_->c.items, __ATOMIC_ACQUIRE);
}

uint64_t ShmQueue::capacity_bytes() const { return seg_ ? seg_->capacity : 0; }
uint64_t ShmQueue::maxsize() const { return seg_ ? seg_->maxsize : 0; }

Info ShmQueue::info() const {
    if (!seg_) throw InvalidArgument("queue is detached");
    Info in{};
    std::vector<int32_t> pids;
    {
        Section section(*const_cast<ShmQueue*>(this), -1, false);
        const Counters& c = seg_->c;
        in.capacity_bytes = seg_->capacity;
        in.maxsize = seg_->maxsize;
        in.items = c.items;
        in.unfinished = c.unfinished;
        in.used_bytes = c.tail - c.head;
        in.head = c.head;
        in.read = c.read;
        in.tail = c.tail;
        in.stats = c.stats;
        for (auto& s : seg_->slots)
            if (int32_t p = s.pid.load()) pids.push_back(p);
    }
    in.closed = seg_->closed.load() != 0;
    in.persistent = seg_->persistent != 0;
    in.version = seg_->version;
    in.creator_pid = seg_->creator_pid;
    for (int32_t p : pids) in.attached.emplace_back(p, pid_alive(p));
    return in;
}

}  // namespace sage
