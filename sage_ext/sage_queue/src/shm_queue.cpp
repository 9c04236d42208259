// Implementation of the protocol described in include/shm_queue.h.
//
// Shared memory is input: whatever any process wrote there, every value read from the
// segment after attach is read once into a local, checked, and only then used. The
// geometry (capacity, maxsize, ring offset) is kept privately from attach; the counters
// are checked at the start of every locked section; each record's length is checked
// against the ring before it is followed. A violation is CorruptSegment, with the section
// rolled back and the lock released, never a signal, a write outside the mapping or a
// wait without end.
#include "shm_queue.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
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
#include <utility>

#include "lock_holder.h"

namespace sage {

struct Counters {  // everything a locked section may change, saved by the journal
    uint64_t head;        // oldest byte not yet freed
    uint64_t read;        // next record to claim
    uint64_t tail;        // next byte to reserve
    uint64_t items;       // records reserved or committed, not yet claimed
    uint64_t unfinished;  // puts not yet matched by task_done
    Stats stats;
};

namespace {

constexpr uint64_t kMagic = 0x3145554555514753ULL;  // "SGQUEUE1" in memory order
constexpr int kMaxSlots = 256;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kDefaultCapacity = 8ULL << 20;
constexpr uint64_t kMinCapacity = kPage;
constexpr uint64_t kMaxCapacity = 1ULL << 40;
constexpr uint64_t kMaxMaxsize = 1ULL << 40;
constexpr uint64_t kMaxOffset = 1ULL << 62;   // ring positions stay below: no sum of them overflows
constexpr double kMaxSpinSeconds = 20e-6;    // a futex wake costs ~10 us each way on small VMs
constexpr double kLivenessSlice = 0.02;      // how often a waiter checks for dead peers
constexpr double kLostWakeSlice = 0.1;       // longest sleep: the sleeper count that gates wakes is shared memory
constexpr uint64_t kLivenessAgeNs = 20000000; // a record held longer than this gets its holder checked
constexpr uint64_t kLargeRecord = 64 * 1024;  // signal consumers before starting a copy this long
constexpr double kInitWaitSeconds = 2.0;     // how long an opener waits for a creator to finish
constexpr int kLockSpins = 256;              // ~10 us of watching a held lock before sleeping on it
constexpr const char* kCleanup = "; remove it with `sage queue cleanup --force`";

std::atomic<LockWaitHook> lock_wait_hook{nullptr};

enum RecordState : uint32_t {
    kReserved = 1, kCommitted = 2, kClaimed = 3, kFree = 4, kPad = 5, kAbandoned = 6,
};

struct RecordHeader {
    std::atomic<uint32_t> state;
    uint8_t tag;
    uint8_t unused0;
    uint16_t nparts;
    int32_t holder;         // the producer while reserved, the consumer once claimed
    uint32_t holder_start;  // low 32 bits of the holder's start time: a reused pid is not it
    uint64_t len;           // payload bytes
    uint64_t stamp_ns;      // CLOCK_MONOTONIC_COARSE when reserved (then when claimed): age of the hold
};
static_assert(sizeof(RecordHeader) == kRecordHeader, "record header must be 32 bytes");

constexpr uint32_t kSlotForChild = 1;  // reserved by a parent for the child it is forking

struct Slot {  // one attached handle
    std::atomic<int32_t> pid;
    uint32_t flags;
    uint64_t start;        // with pid, the process's identity (process_identity.h)
    uint64_t pidns;        // its pid namespace
    uint64_t outstanding;  // records this handle got and has not task_done'd
};

struct SlotCopy { int32_t pid; uint32_t flags; uint64_t start, pidns, outstanding; };

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

[[noreturn]] void throw_errno(const std::string& what, int err) {
    throw SystemError(what + ": " + strerror(err), err);
}

// What is wrong with ring positions and item count `c` in a ring of `cap` bytes; nullptr
// if nothing. Every loop over records is bounded by these: read walks at most one ring.
const char* counters_problem(const Counters& c, uint64_t cap) {
    if (!(c.head <= c.read && c.read <= c.tail)) return "its ring positions are out of order";
    if (c.tail >= kMaxOffset) return "its ring positions are out of range";
    if (c.tail - c.head > cap) return "its ring holds more bytes than it has";
    if (c.head % kRecordHeader || c.read % kRecordHeader || c.tail % kRecordHeader)
        return "its ring positions are misaligned";
    if (c.items > (c.tail - c.read) / kRecordHeader) return "its item count exceeds its records";
    return nullptr;
}

// One record header, read once. `len` and `size` are valid only if `fits`.
struct RecordFacts {
    uint32_t state;
    uint64_t len, size;
    bool fits;  // its length is within the ring and the record ends where it may (`limit`)
};

RecordFacts read_record(const RecordHeader* r, uint64_t offset, uint64_t limit, uint64_t cap) {
    RecordFacts f{r->state.load(std::memory_order_acquire), __atomic_load_n(&r->len, __ATOMIC_RELAXED), 0, false};
    if (f.len <= cap) {
        f.size = record_size(f.len);
        f.fits = offset % cap + f.size <= cap && f.size <= limit - offset;
    }
    return f;
}

}  // namespace

// A locked section: the lock, the counters read once and checked, and unless
// journal=false the undo journal. Work is done on the section's copy of the counters,
// stored back when the section ends. If the section throws (a corrupt record, say), its
// changes are rolled back and the lock released, exactly as if its holder had died.
class ShmQueue::Section {
public:
    Section(ShmQueue& q, int slot, bool journal = true)
        : q_(q), journal_(journal), exceptions_(std::uncaught_exceptions()) {
        q_.lock();
        Segment* s = q_.seg_;
        c_ = s->c;
        if (const char* problem = counters_problem(c_, q_.cap_)) {
            q_.unlock();
            throw CorruptSegment("queue '" + q_.name_ + "' is corrupt: " + problem + kCleanup);
        }
        if (journal_) {
            saved_ = c_;
            Journal& j = s->journal;
            j.saved = c_;
            j.slot_index = slot;
            if (slot >= 0) {
                const Slot& sl = s->slots[slot];
                j.saved_slot = {sl.pid.load(), sl.flags, sl.start, sl.pidns, sl.outstanding};
            }
            j.active.store(1, std::memory_order_relaxed);
            // The journal before any change it covers (no full fence needed: stores only).
            std::atomic_thread_fence(std::memory_order_release);
        }
    }
    ~Section() {
        Segment* s = q_.seg_;
        if (std::uncaught_exceptions() > exceptions_) {
            // A destructor must not throw: rolling back from our own private copy cannot fail.
            if (journal_) q_.rollback_locked(&saved_);
        } else if (journal_) {
            s->c = c_;
        }
        if (journal_) s->journal.active.store(0, std::memory_order_release);
        q_.unlock();
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

    Counters& counters() { return c_; }  // checked; stored back at the end (journal sections)

private:
    ShmQueue& q_;
    const bool journal_;
    const int exceptions_;
    Counters c_;
    Counters saved_;
};

std::vector<std::pair<std::string, size_t>> layout_offsets() {
#define SAGE_FIELD(prefix, type, field) {prefix #field, offsetof(type, field)}
    return {
        SAGE_FIELD("segment.", Segment, magic), SAGE_FIELD("segment.", Segment, version),
        SAGE_FIELD("segment.", Segment, header_bytes), SAGE_FIELD("segment.", Segment, capacity),
        SAGE_FIELD("segment.", Segment, maxsize), SAGE_FIELD("segment.", Segment, ring_offset),
        SAGE_FIELD("segment.", Segment, total_bytes), SAGE_FIELD("segment.", Segment, persistent),
        SAGE_FIELD("segment.", Segment, creator_pid), SAGE_FIELD("segment.", Segment, ready),
        SAGE_FIELD("segment.", Segment, closed), SAGE_FIELD("segment.", Segment, unlinked),
        SAGE_FIELD("segment.", Segment, mutex), SAGE_FIELD("segment.", Segment, c),
        SAGE_FIELD("segment.", Segment, journal), SAGE_FIELD("segment.", Segment, not_empty_seq),
        SAGE_FIELD("segment.", Segment, not_empty_sleepers), SAGE_FIELD("segment.", Segment, not_full_seq),
        SAGE_FIELD("segment.", Segment, not_full_sleepers), SAGE_FIELD("segment.", Segment, join_seq),
        SAGE_FIELD("segment.", Segment, join_sleepers), SAGE_FIELD("segment.", Segment, slots),
        {"segment.size", sizeof(Segment)}, {"segment.ring", ring_offset()},
        SAGE_FIELD("counters.", Counters, head), SAGE_FIELD("counters.", Counters, read),
        SAGE_FIELD("counters.", Counters, tail), SAGE_FIELD("counters.", Counters, items),
        SAGE_FIELD("counters.", Counters, unfinished), SAGE_FIELD("counters.", Counters, stats),
        {"counters.size", sizeof(Counters)},
        SAGE_FIELD("journal.", Journal, active), SAGE_FIELD("journal.", Journal, slot_index),
        SAGE_FIELD("journal.", Journal, saved), SAGE_FIELD("journal.", Journal, saved_slot),
        SAGE_FIELD("slot.", Slot, pid), SAGE_FIELD("slot.", Slot, flags), SAGE_FIELD("slot.", Slot, start),
        SAGE_FIELD("slot.", Slot, pidns), SAGE_FIELD("slot.", Slot, outstanding), {"slot.size", sizeof(Slot)},
        {"slot.count", size_t(kMaxSlots)},
        SAGE_FIELD("record.", RecordHeader, state), SAGE_FIELD("record.", RecordHeader, tag),
        SAGE_FIELD("record.", RecordHeader, nparts), SAGE_FIELD("record.", RecordHeader, holder),
        SAGE_FIELD("record.", RecordHeader, holder_start), SAGE_FIELD("record.", RecordHeader, len),
        SAGE_FIELD("record.", RecordHeader, stamp_ns), {"record.size", sizeof(RecordHeader)},
        {"record.state.reserved", kReserved}, {"record.state.committed", kCommitted},
        {"record.state.claimed", kClaimed}, {"record.state.free", kFree}, {"record.state.pad", kPad},
        {"record.state.abandoned", kAbandoned},
    };
#undef SAGE_FIELD
}

// ---------------------------------------------------------------- names

namespace {

// The character of `text` that starts at byte `at`, as a user would name it: 'é' (U+00E9),
// a control character by its code, a byte that starts no UTF-8 character by its value.
std::string describe_character(const std::string& text, size_t at) {
    const unsigned char lead = text[at];
    char buf[40];
    if (lead >= 0x20 && lead < 0x7f) {
        snprintf(buf, sizeof buf, "'%c'", lead);
        return buf;
    }
    if (lead < 0x80) {
        snprintf(buf, sizeof buf, "control character 0x%02x", unsigned(lead));
        return buf;
    }
    const size_t extra = lead >= 0xf0 && lead < 0xf5 ? 3 : lead >= 0xe0 && lead < 0xf0 ? 2 : lead >= 0xc2 && lead < 0xe0 ? 1 : 0;
    uint32_t cp = lead & (0x3f >> extra);
    bool valid = extra > 0 && at + extra < text.size();
    for (size_t k = 1; valid && k <= extra; ++k) {
        const unsigned char cont = text[at + k];
        valid = (cont & 0xc0) == 0x80;
        cp = (cp << 6) | (cont & 0x3f);
    }
    if (!valid) {
        snprintf(buf, sizeof buf, "byte 0x%02x (not UTF-8)", unsigned(lead));
        return buf;
    }
    snprintf(buf, sizeof buf, " (U+%04X)", unsigned(cp));
    return "'" + text.substr(at, extra + 1) + "'" + buf;
}

}  // namespace

std::string ShmQueue::segment_path(const std::string& name) { return "/sage_queue." + name; }

void ShmQueue::validate_name(const std::string& name) {
    if (name.empty()) throw InvalidArgument("queue name must not be empty");
    if (name.size() > kMaxNameLength)
        throw InvalidArgument("queue name is " + std::to_string(name.size()) + " characters long; the limit is " +
                              std::to_string(kMaxNameLength));
    for (size_t i = 0; i < name.size(); ++i) {
        const unsigned char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                  ch == '-' || ch == '.';
        if (!ok) {
            throw InvalidArgument("queue name contains " + describe_character(name, i) +
                                  "; use only letters, digits, '_', '-' and '.'");
        }
    }
    if (name.find("..") != std::string::npos || name == ".")
        throw InvalidArgument("queue name must not be '.' or contain '..'");
}

// ---------------------------------------------------------------- lifecycle

ShmQueue::ShmQueue(const std::string& name, uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                   OpenMode mode)
    : name_(name), me_(self_identity()) {
    validate_name(name);
    if (capacity_bytes != 0 && (capacity_bytes < kMinCapacity || capacity_bytes > kMaxCapacity))
        throw InvalidArgument("capacity_bytes must be between " + std::to_string(kMinCapacity) + " and " +
                              std::to_string(kMaxCapacity) + ", got " + std::to_string(capacity_bytes));
    if (maxsize > kMaxMaxsize) throw InvalidArgument("maxsize is too large: " + std::to_string(maxsize));
    const std::string path = segment_path(name);

    for (int attempt = 0; attempt < 5; ++attempt) {
        if (mode == OpenMode::open_or_create || mode == OpenMode::create_only) {
            int fd = create_segment_file(path, file_);
            if (fd >= 0) {
                FileDescriptor owned(fd);
                create_segment(fd, capacity_bytes, maxsize, persistent);
                return;
            }
            if (errno != EEXIST || mode == OpenMode::create_only)
                throw_errno("cannot create queue '" + name + "'", errno);
        }
        uint64_t file_size = 0;
        FileDescriptor fd(open_trusted_segment_file(path, name, file_, file_size));
        if (!fd.valid()) {
            if (mode == OpenMode::open_or_create) continue;  // removed meanwhile: create it
            throw SystemError("no queue named '" + name + "' (no file " + shm_file_path(path) + ")", ENOENT);
        }
        attach_segment(fd.get(), file_size, capacity_bytes, maxsize);
        // From here on the mapping is ours to undo if joining fails.
        Joined joined;
        try {
            joined = join_users(mode != OpenMode::inspect);
        } catch (...) {
            munmap(seg_, map_size_);
            seg_ = nullptr;
            throw;
        }
        if (joined == Joined::ok) return;
        munmap(seg_, map_size_);
        seg_ = nullptr;
        ring_ = nullptr;
        if (mode == OpenMode::open_only) {
            if (joined == Joined::stale)
                throw SystemError("no queue named '" + name + "': the segment left by its users, who all exited "
                                  "without detaching, was removed", ENOENT);
            throw SystemError("queue '" + name + "' was just removed", ENOENT);
        }
        // removed (by its last user, or by us as stale): start over, which creates a fresh one
    }
    throw SystemError("queue '" + name + "' keeps being removed while opening it", EAGAIN);
}

// A new segment in the exclusively created file `fd`: sized, reserved, initialised, and
// with our slot taken before it is marked ready, so no opener ever sees it without a user.
void ShmQueue::create_segment(int fd, uint64_t capacity_bytes, uint64_t maxsize, bool persistent) {
    const std::string path = segment_path(name_);
    const uint64_t cap = round_up(capacity_bytes ? capacity_bytes : kDefaultCapacity, kPage);
    const uint64_t total = ring_offset() + cap;
    int rc = ftruncate(fd, off_t(total)) == 0 ? 0 : errno;
    // Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later.
    if (rc == 0) rc = posix_fallocate(fd, 0, off_t(total));
    if (rc != 0) {
        unlink_if_same_file(path, file_);
        if (rc == ENOSPC)
            throw SystemError("not enough room in /dev/shm for queue '" + name_ + "' (" + std::to_string(total) +
                              " bytes); free space there, pass a smaller capacity_bytes, or give the container "
                              "more (docker run --shm-size=256m)", rc);
        throw_errno("cannot size queue '" + name_ + "'", rc);
    }
    Mapping mapping;
    try {
        mapping = Mapping(fd, total, true, true);
    } catch (...) {
        unlink_if_same_file(path, file_);
        throw;
    }
    seg_ = static_cast<Segment*>(mapping.release());
    map_size_ = total;
    cap_ = cap;
    maxsize_ = maxsize;
    persistent_ = persistent;
    ring_ = reinterpret_cast<uint8_t*>(seg_) + ring_offset();
    seg_->magic = kMagic;
    seg_->version = kLayoutVersion;
    seg_->header_bytes = sizeof(Segment);
    seg_->capacity = cap;
    seg_->maxsize = maxsize;
    seg_->ring_offset = ring_offset();
    seg_->total_bytes = total;
    seg_->persistent = persistent ? 1 : 0;
    seg_->creator_pid = me_.pid;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&seg_->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    Slot& mine = seg_->slots[0];
    mine.flags = 0;
    mine.start = me_.start;
    mine.pidns = me_.pidns;
    mine.outstanding = 0;
    mine.pid.store(me_.pid);
    slot_ = 0;
    seg_->ready.store(1, std::memory_order_release);
}

// Maps an existing segment: waits for its creator to finish, checks the header on a
// header-only mapping (no page of a file that fails is ever touched), then maps the whole
// file, populated. Throws with nothing left mapped.
void ShmQueue::attach_segment(int fd, uint64_t file_size, uint64_t capacity_bytes, uint64_t maxsize) {
    const uint64_t header_size = ring_offset();
    const double give_up = monotonic_seconds() + kInitWaitSeconds;
    Mapping header;
    for (;;) {
        // A creator sizes the file in one step: a size between 0 and a minimal queue is not one.
        if (file_size > 0 && file_size < header_size + kMinCapacity)
            throw CorruptSegment("cannot attach to queue '" + name_ + "': its file is only " +
                                 std::to_string(file_size) + " bytes, too small to be a sage_queue" + kCleanup);
        if (file_size > 0) {
            header = Mapping(fd, header_size, false, false);
            const Segment* h = static_cast<const Segment*>(header.get());
            const bool ready = h->ready.load(std::memory_order_acquire) == 1;
            // A creator's freshly sized file is all zeros: other bytes mean it is not ours.
            const bool foreign = __atomic_load_n(&h->magic, __ATOMIC_RELAXED) != 0 &&
                                 __atomic_load_n(&h->magic, __ATOMIC_RELAXED) != kMagic;
            if (ready || foreign) break;
            header = Mapping();
        }
        if (monotonic_seconds() > give_up)
            throw CorruptSegment("queue '" + name_ + "' was never initialised (its creator may have died while "
                                 "creating it)" + kCleanup);
        usleep(1000);  // only while another process is creating the segment
        struct stat st{};
        if (fstat(fd, &st) != 0) throw_errno("cannot stat queue '" + name_ + "'", errno);
        file_size = uint64_t(st.st_size);
    }
    // Each field read once, into the locals that are kept.
    const Segment* h = static_cast<const Segment*>(header.get());
    const uint64_t magic = h->magic, capacity = h->capacity, max_items = h->maxsize;
    const uint64_t offset = h->ring_offset, total = h->total_bytes;
    const uint32_t version = h->version, header_bytes = h->header_bytes, persistent = h->persistent;
    std::string problem;
    if (magic != kMagic) problem = "it is not a sage_queue segment (bad magic)";
    else if (version != kLayoutVersion)
        problem = "its layout version is " + std::to_string(version) + ", this build reads " +
                  std::to_string(kLayoutVersion);
    else if (header_bytes != sizeof(Segment) || offset != header_size)
        problem = "its header size does not match this build";
    else if (capacity < kMinCapacity || capacity > kMaxCapacity || capacity % kPage || total != offset + capacity ||
             total != file_size)
        problem = "its sizes are inconsistent (capacity " + std::to_string(capacity) + ", file " +
                  std::to_string(file_size) + " bytes)";
    else if (max_items > kMaxMaxsize) problem = "its maxsize is out of range";
    if (!problem.empty()) throw CorruptSegment("cannot attach to queue '" + name_ + "': " + problem + kCleanup);
    if (capacity_bytes && round_up(capacity_bytes, kPage) != capacity)
        throw InvalidArgument("queue '" + name_ + "' exists with capacity_bytes=" + std::to_string(capacity) +
                              ", not " + std::to_string(capacity_bytes) +
                              "; open it without capacity_bytes or use another name");
    if (maxsize && maxsize != max_items)
        throw InvalidArgument("queue '" + name_ + "' exists with maxsize=" + std::to_string(max_items) + ", not " +
                              std::to_string(maxsize) + "; open it without maxsize or use another name");
    Mapping whole(fd, total, true, true);
    seg_ = static_cast<Segment*>(whole.release());
    map_size_ = total;
    cap_ = capacity;
    maxsize_ = max_items;
    persistent_ = persistent != 0;
    ring_ = reinterpret_cast<uint8_t*>(seg_) + offset;
}

// Joins the segment's users: takes a slot (unless only inspecting), after checking the
// counters. A segment whose users all died without detaching is stale: it is removed
// (its name, while it is still ours) instead of joined.
ShmQueue::Joined ShmQueue::join_users(bool take_slot) {
    if (!take_slot) {
        Section section(*this, -1, false);  // only the counters' check
        return Joined::ok;
    }
    reap_dead_slots();
    Section section(*this, -1);
    if (seg_->unlinked.load() != 0) return Joined::removed;
    bool users = persistent_;
    for (int i = 0; i < kMaxSlots && !users; ++i) users = seg_->slots[i].pid.load() != 0;
    if (!users) {
        seg_->unlinked.store(1);
        remove_name();
        return Joined::stale;
    }
    slot_ = take_slot_locked();
    return Joined::ok;
}

bool ShmQueue::remove_name() { return unlink_if_same_file(segment_path(name_), file_); }

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
    try {
        if (slot_ >= 0 && getpid() == me_.pid) {
            Section section(*this, slot_);
            Slot& mine = seg_->slots[slot_];
            mine.outstanding = 0;  // our unfinished tasks stay counted: any process may task_done them
            mine.pid.store(0);
            bool anyone = false;
            for (int i = 0; i < kMaxSlots && !anyone; ++i)
                anyone = seg_->slots[i].pid.load() != 0 && slot_liveness(i) != Liveness::dead;
            if (!anyone && !persistent_ && seg_->unlinked.load() == 0) {
                seg_->unlinked.store(1);
                remove_name();
            }
        }
    } catch (const CorruptSegment&) {
        // Let go of a corrupt segment all the same: `sage queue cleanup --force` removes it.
    } catch (...) {
        munmap(seg_, map_size_);
        seg_ = nullptr;
        ring_ = nullptr;
        slot_ = -1;
        throw;
    }
    munmap(seg_, map_size_);
    seg_ = nullptr;
    ring_ = nullptr;
    slot_ = -1;
}

bool ShmQueue::detaching() const { return detaching_.load(std::memory_order_relaxed); }

void ShmQueue::unlink() {
    if (!seg_) throw InvalidArgument("queue is detached");
    if (seg_->unlinked.exchange(1) == 0) remove_name();
}

void ShmQueue::before_fork() {
    fork_slot_ = -1;
    if (!seg_ || detaching() || slot_ < 0 || seg_->unlinked.load()) return;
    try {
        Section section(*this, -1);
        fork_slot_ = take_slot_locked();
        seg_->slots[fork_slot_].flags = kSlotForChild;
    } catch (...) {
        fork_slot_ = -1;  // no slot for the child: it takes one of its own after the fork
    }
}

void ShmQueue::after_fork_in_parent() { fork_slot_ = -1; }  // the reserved slot is the child's now

void ShmQueue::after_fork_in_child() {
    if (!seg_ || getpid() == me_.pid) return;
    me_ = self_identity();
    users_.store(0);  // calls in flight belonged to the parent's other threads
    slot_ = -1;
    const int reserved = std::exchange(fork_slot_, -1);
    if (seg_->unlinked.load()) return;
    reap_dead_slots();  // children that came and went before us free their slots
    Section section(*this, -1);
    slot_ = take_slot_locked(reserved);
}

// Takes slot `prefer` if it is the one our parent reserved for us, else a free one.
int ShmQueue::take_slot_locked(int prefer) {
    int index = -1;
    if (prefer >= 0 && prefer < kMaxSlots && seg_->slots[prefer].flags == kSlotForChild) index = prefer;
    for (int i = 0; i < kMaxSlots && index < 0; ++i)
        if (seg_->slots[i].pid.load() == 0) index = i;
    if (index < 0)
        throw SystemError("queue '" + name_ + "' already has " + std::to_string(kMaxSlots) +
                          " attached handles; detach some first", EMFILE);
    Slot& s = seg_->slots[index];
    seg_->journal.slot_index = index;
    seg_->journal.saved_slot = {s.pid.load(), s.flags, s.start, s.pidns, s.outstanding};
    s.flags = 0;
    s.start = me_.start;
    s.pidns = me_.pidns;
    s.outstanding = 0;
    s.pid.store(me_.pid);
    return index;
}

Liveness ShmQueue::slot_liveness(int index) const {
    const Slot& s = seg_->slots[index];
    return liveness(ProcessIdentity{s.pid.load(), s.start, s.pidns});
}

// A record's holder is known by its pid and the low bits of its start time; its slot, if
// it has one, says which pid namespace that pid belongs to.
Liveness ShmQueue::holder_liveness(int32_t pid, uint32_t start32) const {
    for (int i = 0; i < kMaxSlots; ++i) {
        const Slot& s = seg_->slots[i];
        if (s.pid.load() == pid && uint32_t(s.start) == start32) return slot_liveness(i);
    }
    return liveness_by_start32(pid, start32);
}

void ShmQueue::reap_dead_slots() {
    for (int i = 0; i < kMaxSlots; ++i) {
        const int32_t p = seg_->slots[i].pid.load();
        if (p == 0 || (p == me_.pid && seg_->slots[i].start == me_.start) || slot_liveness(i) != Liveness::dead)
            continue;
        bool zero = false;
        {
            Section section(*this, i);
            Slot& s = seg_->slots[i];
            if (s.pid.load() == p) {
                Counters& c = section.counters();
                uint64_t lost = s.outstanding < c.unfinished ? s.outstanding : c.unfinished;
                c.unfinished -= lost;
                c.stats.written_off_tasks += lost;
                s.outstanding = 0;
                s.flags = 0;
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
    // each look at who holds the lock (lock_holder.h): a lock word naming anything but a
    // live user that holds it for microseconds (a corrupt segment) would otherwise be waited
    // on forever.
#if defined(__GLIBC__)
    // Lock only a mutex of the type the creator made: a corrupt kind sends glibc down paths
    // that abort the process.
    if (__atomic_load_n(&seg_->mutex.__data.__kind, __ATOMIC_RELAXED) != robust_shared_mutex_kind())
        throw CorruptSegment("the lock of queue '" + name_ + "' is not a robust process-shared mutex: the segment "
                             "is corrupt" + kCleanup);
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
#if defined(__GLIBC__)
    HolderWatch watch;
    auto progress_now = [this] {
        return uint64_t(seg_->not_empty_seq.load()) + seg_->not_full_seq.load() + seg_->join_seq.load();
    };
#endif
    while (rc == EBUSY || rc == ETIMEDOUT) {
#if defined(__GLIBC__)
        const int* word = &seg_->mutex.__data.__lock;
        if (corrupt_lock_word_ != 0 && __atomic_load_n(word, __ATOMIC_ACQUIRE) == corrupt_lock_word_ &&
            progress_now() == corrupt_lock_progress_)
            throw CorruptSegment("the lock of queue '" + name_ + "' still holds the corrupt word " +
                                 std::to_string(corrupt_lock_word_) + " found before" + kCleanup);
        if (rc == ETIMEDOUT) {
            const int seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
            const uint64_t progress = progress_now();
            bool foreign = false;
            for (int i = 0; i < kMaxSlots && !foreign; ++i)
                foreign = seg_->slots[i].pid.load() != 0 && seg_->slots[i].pidns != me_.pidns;
            std::string problem = watch.look(seen, word, seg_, progress, foreign);
            // Only a word that stayed put while we looked: a holder may have just left.
            if (!problem.empty() && __atomic_load_n(word, __ATOMIC_ACQUIRE) == seen) {
                corrupt_lock_word_ = seen;
                corrupt_lock_progress_ = progress;
                throw CorruptSegment("the lock of queue '" + name_ + "' " + problem + ": the segment is corrupt" +
                                     kCleanup);
            }
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
            rollback_locked(nullptr);
            seg_->c.stats.lock_recoveries++;
        } catch (...) {
            // Unlocked without being made consistent, the mutex stays unrecoverable: every
            // later user gets the same clear error instead of a hang.
            pthread_mutex_unlock(&seg_->mutex);
            throw;
        }
        pthread_mutex_consistent(&seg_->mutex);
    } else if (rc == ENOTRECOVERABLE) {
        throw CorruptSegment("the lock of queue '" + name_ + "' is unrecoverable (a user died inside it and the "
                             "segment could not be repaired)" + kCleanup);
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

// Undoes a locked section: this thread's own (`own_saved`, the counters it started from,
// held privately), or a dead holder's (nullptr: its journal, in shared memory that
// anything may have written, is replayed only if it is consistent).
void ShmQueue::rollback_locked(const void* own_saved) {
    Journal& j = seg_->journal;
    if (!own_saved && !j.active.load()) return;
    Counters saved = own_saved ? *static_cast<const Counters*>(own_saved) : j.saved;
    if (!own_saved && counters_problem(saved, cap_))
        throw CorruptSegment("queue '" + name_ + "' has a corrupt undo journal" + kCleanup);
    Counters& c = seg_->c;
    const uint64_t advanced_head = c.head;
    // Never move head back: the space the section freed may already hold the headers of
    // its own new reservation. Advancing head only passes consumed records, so the advance
    // stands; an empty-ring restart (past the restored read) proves every record before
    // read was consumed, so head goes to read.
    if (advanced_head > saved.head && advanced_head < kMaxOffset) saved.head = std::min(advanced_head, saved.read);
    c = saved;
    const int32_t slot = j.slot_index;
    if (slot >= 0 && slot < kMaxSlots) {
        const SlotCopy s = j.saved_slot;
        Slot& to = seg_->slots[slot];
        to.flags = s.flags;
        to.start = s.start;
        to.pidns = s.pidns;
        to.outstanding = s.outstanding;
        to.pid.store(s.pid);
    }
    // Past the restored read pointer a record can only be reserved, committed or padding:
    // undo any claim or abandonment the section made there. At most one ring.
    for (uint64_t off = saved.read; off < saved.tail;) {
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + off % cap_);
        const RecordFacts f = read_record(r, off, saved.tail, cap_);
        if (!f.fits) break;  // corrupt: stop here, claim() will report it
        if (f.state == kClaimed) r->state.store(kCommitted);
        else if (f.state == kAbandoned) r->state.store(kReserved);
        off += f.size;
    }
    j.active.store(0);
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
        // Never sleep without end: a wake skipped because the sleeper count was overwritten
        // (anything may write it) is found by the next look at the sequence word.
        const double slice = check_liveness ? kLivenessSlice : kLostWakeSlice;
        const double left = std::min(deadline - t, slice);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        bool interrupted = false;
        if (seq.load(std::memory_order_seq_cst) == seen)
            interrupted = futex_wait(&seq, seen, left) != 0 && errno == EINTR;
        // Take our count back without wrapping below zero.
        for (uint32_t n = sleepers.load(std::memory_order_seq_cst);
             n != 0 && !sleepers.compare_exchange_weak(n, n - 1, std::memory_order_seq_cst);) {
        }
        if (interrupted) return Status::interrupted;  // the caller runs the signal's handler
        if (seq.load(std::memory_order_acquire) != seen) {
            learn();
            return Status::ok;
        }
        if (check_liveness && monotonic_seconds() - t >= kLivenessSlice * 0.9) return Status::ok;  // caller rechecks peers
    }
}

// A hold is checked only once it is old: a live peer is usually mid-copy, and the check
// costs syscalls and /proc reads. CLOCK_MONOTONIC(_COARSE) is the same for every process.
bool ShmQueue::holder_dead(const void* record, uint64_t now) const {
    const auto* r = static_cast<const RecordHeader*>(record);
    const int32_t holder = r->holder;
    const uint32_t start = r->holder_start;
    return now - r->stamp_ns >= kLivenessAgeNs && holder_liveness(holder, start) == Liveness::dead;
}

// ---------------------------------------------------------------- put

// Advances head over records that are consumed (or whose consumer died while copying
// them out). Head is stored through at once: a section that dies after reusing the space
// must not have head rolled back over it.
bool ShmQueue::reclaim_space_locked(Counters& c) {
    const uint64_t t = stamp_now_ns();
    bool moved = false;
    while (c.head < c.read) {
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + c.head % cap_);
        const RecordFacts f = read_record(r, c.head, c.read, cap_);
        if (!f.fits)
            throw CorruptSegment("queue '" + name_ + "' has a corrupt record at offset " + std::to_string(c.head) +
                                 kCleanup);
        if (f.state == kClaimed) {
            if (!holder_dead(r, t)) break;
            r->state.store(kFree);  // its consumer died while copying it out
            c.stats.reclaimed_records++;
        } else if (f.state != kFree && f.state != kPad && f.state != kAbandoned) {
            throw CorruptSegment("queue '" + name_ + "' has a record in state " + std::to_string(f.state) +
                                 " behind its read pointer" + kCleanup);
        }
        c.head += f.size;
        seg_->c.head = c.head;
        moved = true;
    }
    return moved;
}

Status ShmQueue::put_many(const Message* msgs, size_t n, double timeout) {
    if (!seg_) throw InvalidArgument("queue is detached");
    if (n == 0) return Status::ok;
    const uint64_t cap = cap_;
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
        total += len > cap ? cap + 1 : record_size(len);
        if (total > cap) break;  // too large already; no sum may overflow
    }
    if (total > cap)
        throw InvalidArgument((n == 1 ? "item of " : "batch of ") + std::to_string(payload_total) +
                              " bytes or more is larger than the ring of queue '" + name_ + "' (" +
                              std::to_string(cap) + " bytes); create it with a larger capacity_bytes");
    if (maxsize_ && n > maxsize_)
        throw InvalidArgument("batch of " + std::to_string(n) + " items exceeds maxsize=" + std::to_string(maxsize_) +
                              " of queue '" + name_ + "'");

    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        Status st = Status::timeout;
        {
            Section section(*this, -1);
            seen = seg_->not_full_seq.load(std::memory_order_seq_cst);
            Counters& c = section.counters();
            if (seg_->closed.load()) {
                st = Status::closed;
            } else if (!maxsize_ || c.items + n <= maxsize_) {
                for (int pass = 0; pass < 2 && st != Status::ok; ++pass) {
                    if (pass == 1 && !reclaim_space_locked(c)) break;
                    if (c.head == c.tail && c.tail % cap) {
                        // Empty ring: restart at a ring boundary so a batch that fits never needs padding.
                        c.head = c.read = c.tail = round_up(c.tail, cap);
                        seg_->c.head = c.head;
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
                                pad->holder = me_.pid;
                                pad->holder_start = uint32_t(me_.start);
                                pad->state.store(kPad, std::memory_order_relaxed);
                            }
                            auto* r = reinterpret_cast<RecordHeader*>(ring_ + offsets[i] % cap);
                            r->tag = msgs[i].tag;
                            r->nparts = msgs[i].nparts;
                            r->holder = me_.pid;
                            r->holder_start = uint32_t(me_.start);
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
    const uint64_t cap = cap_;
    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        bool corrupt = false, drained;
        uint64_t at;
        {
            Section section(*this, slot_);
            seen = seg_->not_empty_seq.load(std::memory_order_seq_cst);
            Counters& c = section.counters();
            uint64_t bytes = 0, t = 0;
            while (out.size() < max_items && c.read < c.tail) {
                auto* r = reinterpret_cast<RecordHeader*>(ring_ + c.read % cap);
                const RecordFacts f = read_record(r, c.read, c.tail, cap);
                if (!f.fits) {
                    corrupt = true;
                    break;
                }
                if (f.state == kPad) {
                    c.read += f.size;
                } else if (f.state == kReserved) {
                    if (!t) t = stamp_now_ns();
                    if (!holder_dead(r, t)) break;
                    r->state.store(kAbandoned);  // its producer died before committing it
                    c.read += f.size;
                    if (c.items) c.items--;
                    if (c.unfinished) c.unfinished--;
                    c.stats.abandoned_records++;
                } else if (f.state == kCommitted) {
                    if (!out.empty() && bytes + f.len > max_bytes) break;
                    if (!t) t = stamp_now_ns();
                    const uint8_t tag = r->tag;
                    const uint16_t nparts = r->nparts;
                    r->holder = me_.pid;
                    r->holder_start = uint32_t(me_.start);
                    r->stamp_ns = t;
                    r->state.store(kClaimed, std::memory_order_relaxed);
                    uint8_t* payload = reinterpret_cast<uint8_t*>(r) + kRecordHeader;
                    out.push_back({c.read, tag, nparts, payload, f.len});
                    c.read += f.size;
                    if (c.items) c.items--;
                    bytes += f.len;
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
            throw CorruptSegment("queue '" + name_ + "' has a corrupt record at offset " + std::to_string(at) +
                                 kCleanup);
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
        auto* r = reinterpret_cast<RecordHeader*>(ring_ + v.offset % cap_);
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
        Counters& c = section.counters();
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
            left = section.counters().unfinished;
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
    const uint64_t items = __atomic_load_n(&seg_->c.items, __ATOMIC_ACQUIRE);
    if (seg_->journal.active.load(std::memory_order_acquire) || items > cap_ / kRecordHeader) {
        // A section is under way, or its holder died inside it, or the count is out of range:
        // the lock settles (recovers, or reports) it.
        Section section(*const_cast<ShmQueue*>(this), -1, false);
        return section.counters().items;
    }
    return items;
}

Info ShmQueue::info() const {
    if (!seg_) throw InvalidArgument("queue is detached");
    Info in{};
    std::vector<int> slots;
    {
        Section section(*const_cast<ShmQueue*>(this), -1, false);
        const Counters& c = section.counters();
        in.capacity_bytes = cap_;
        in.maxsize = maxsize_;
        in.items = c.items;
        in.unfinished = c.unfinished;
        in.used_bytes = c.tail - c.head;
        in.head = c.head;
        in.read = c.read;
        in.tail = c.tail;
        in.stats = c.stats;
        for (int i = 0; i < kMaxSlots; ++i)
            if (seg_->slots[i].pid.load()) slots.push_back(i);
    }
    in.waiting_getters = seg_->not_empty_sleepers.load();
    in.waiting_putters = seg_->not_full_sleepers.load();
    in.waiting_joiners = seg_->join_sleepers.load();
    in.closed = seg_->closed.load() != 0;
    in.persistent = persistent_;
    in.version = kLayoutVersion;
    in.creator_pid = seg_->creator_pid;
    for (int i : slots) in.attached.emplace_back(seg_->slots[i].pid.load(), slot_liveness(i));
    return in;
}

}  // namespace sage
