// The robust lock and its journal (robust_lock.h).
#include "robust_lock.h"

#include <algorithm>
#include <cerrno>
#include <exception>
#include <time.h>

#include "lock_holder.h"

namespace sage {
namespace {

constexpr int kLockSpins = 256;  // ~10 us of watching a held lock before sleeping on it
constexpr long kLockSliceNs = 200000000;  // 200 ms of waiting for the lock between looks at its holder

std::atomic<LockWaitHook> lock_wait_hook{nullptr};

}  // namespace

void set_lock_wait_hook(LockWaitHook hook) { lock_wait_hook.store(hook, std::memory_order_release); }

// ---------------------------------------------------------------- the journal

void Journal::begin(const Counters& c, int slot, const Slot* slots) {
    saved = c;
    slot_index = slot;
    if (slot >= 0) {
        const Slot& sl = slots[slot];
        saved_slot = {sl.pid.load(), sl.flags, sl.start, sl.pidns, sl.outstanding};
    }
    // The saved copy before the mark (a holder killed between them leaves no half-written
    // journal marked active), and the mark before any change it covers.
    active.store(1, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_release);
}

void Journal::cover_slot(int index, const Slot& s) {
    slot_index = index;
    saved_slot = {s.pid.load(), s.flags, s.start, s.pidns, s.outstanding};
    std::atomic_thread_fence(std::memory_order_release);  // the copy before the slot changes
}

void Journal::end() { active.store(0, std::memory_order_release); }

// ---------------------------------------------------------------- the lock

uint64_t SegmentLock::progress() const {
    const Segment* s = a_.seg;
    return uint64_t(s->not_empty.seq.load()) + s->not_full.seq.load() + s->join_done.seq.load();
}

void SegmentLock::lock() {
    Segment* seg = a_.seg;
    // Uncontended: one atomic, as in pthread_mutex_lock. Contended: wait in slices and after
    // each look at who holds the lock (lock_holder.h): a lock word naming anything but a
    // live user that holds it for microseconds (a corrupt segment) would otherwise be waited
    // on forever.
#if defined(__GLIBC__)
    // Lock only a mutex of the type the creator made: a corrupt kind sends glibc down paths
    // that abort the process.
    if (__atomic_load_n(&seg->mutex.__data.__kind, __ATOMIC_RELAXED) != robust_shared_mutex_kind())
        throw CorruptSegment("the lock of queue '" + queue_ + "' is not a robust process-shared mutex: the segment "
                             "is corrupt" + kCleanup);
#endif
    enter_locking();
    struct LeaveUnlessLocked {  // every path that throws leaves without the lock
        bool locked = false;
        ~LeaveUnlessLocked() {
            if (!locked) leave_locking();
        }
    } leave;
    int rc = pthread_mutex_trylock(&seg->mutex);
    // A holder keeps the lock for microseconds: watch the word a little before sleeping.
    for (int i = 0; rc == EBUSY && i < kLockSpins; ++i) {
        cpu_relax();
#if defined(__GLIBC__)
        if (__atomic_load_n(&seg->mutex.__data.__lock, __ATOMIC_RELAXED) != 0) continue;
#endif
        rc = pthread_mutex_trylock(&seg->mutex);
    }
    if (rc == EBUSY) {
        if (LockWaitHook hook = lock_wait_hook.load(std::memory_order_acquire)) hook();
    }
#if defined(__GLIBC__)
    HolderWatch watch;
#endif
    while (rc == EBUSY || rc == ETIMEDOUT) {
#if defined(__GLIBC__)
        const int* word = &seg->mutex.__data.__lock;
        if (corrupt_word_ != 0 && __atomic_load_n(word, __ATOMIC_ACQUIRE) == corrupt_word_ &&
            progress() == corrupt_progress_)
            throw CorruptSegment("the lock of queue '" + queue_ + "' still holds the corrupt word " +
                                 std::to_string(corrupt_word_) + " found before" + kCleanup);
        if (rc == ETIMEDOUT) {
            const int seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
            const uint64_t now = progress();
            bool foreign = false;
            for (int i = 0; i < kMaxSlots && !foreign; ++i)
                foreign = seg->slots[i].pid.load() != 0 && seg->slots[i].pidns != me_.pidns;
            std::string problem = watch.look(seen, word, seg, now, foreign);
            // Only a word that stayed put while we looked: a holder may have just left.
            if (!problem.empty() && __atomic_load_n(word, __ATOMIC_ACQUIRE) == seen) {
                corrupt_word_ = seen;
                corrupt_progress_ = now;
                throw CorruptSegment("the lock of queue '" + queue_ + "' " + problem + ": the segment is corrupt" +
                                     kCleanup);
            }
        }
#endif
        // Wait in slices, between looks at the holder. On the monotonic clock where glibc has
        // it: a wall-clock step must not stretch a slice.
        timespec until;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 30)
        constexpr clockid_t kSliceClock = CLOCK_MONOTONIC;
#else
        constexpr clockid_t kSliceClock = CLOCK_REALTIME;  // what pthread_mutex_timedlock measures on
#endif
        clock_gettime(kSliceClock, &until);
        until.tv_nsec += kLockSliceNs;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000;
        }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 30)
        rc = pthread_mutex_clocklock(&seg->mutex, kSliceClock, &until);
#else
        rc = pthread_mutex_timedlock(&seg->mutex, &until);
#endif
    }
    if (rc == EOWNERDEAD) {
        try {
            rollback(nullptr);
            seg->c.stats.lock_recoveries++;
        } catch (...) {
            // Unlocked without being made consistent, the mutex stays unrecoverable: every
            // later user gets the same clear error instead of a hang.
            pthread_mutex_unlock(&seg->mutex);
            throw;
        }
        pthread_mutex_consistent(&seg->mutex);
    } else if (rc == ENOTRECOVERABLE) {
        throw CorruptSegment("the lock of queue '" + queue_ + "' is unrecoverable (a user died inside it and the "
                             "segment could not be repaired)" + kCleanup);
    } else if (rc != 0) {
        throw_errno("cannot lock queue '" + queue_ + "'", rc);
    }
    leave.locked = true;
}

void SegmentLock::unlock() {
    pthread_mutex_unlock(&a_.seg->mutex);
    leave_locking();
}

void SegmentLock::rollback(const Counters* own_saved) {
    Segment* seg = a_.seg;
    Journal& j = seg->journal;
    if (!own_saved && !j.active.load()) return;
    Counters saved = own_saved ? *own_saved : j.saved;
    if (!own_saved && counters_problem(saved, a_.cap))
        throw CorruptSegment("queue '" + queue_ + "' has a corrupt undo journal" + kCleanup);
    Counters& c = seg->c;
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
        Slot& to = seg->slots[slot];
        to.flags = s.flags;
        to.start = s.start;
        to.pidns = s.pidns;
        to.outstanding = s.outstanding;
        to.pid.store(s.pid);
    }
    undo_claims(a_.ring(), saved.read, saved.tail);
    j.active.store(0);
}

// ---------------------------------------------------------------- the section

LockedSection::LockedSection(SegmentLock& lock, int slot, bool journal)
    : lock_(lock), journal_(journal), exceptions_(std::uncaught_exceptions()) {
    lock_.lock();
    const AttachedSegment& a = lock_.segment();
    Segment* s = a.seg;
    c_ = s->c;
    if (const char* problem = counters_problem(c_, a.cap)) {
        lock_.unlock();
        throw CorruptSegment("queue '" + lock_.queue() + "' is corrupt: " + problem + kCleanup);
    }
    if (journal_) {
        saved_ = c_;
        s->journal.begin(c_, slot, s->slots);
    }
}

LockedSection::~LockedSection() {
    Segment* s = lock_.segment().seg;
    if (std::uncaught_exceptions() > exceptions_) {
        // A destructor must not throw: rolling back from our own private copy cannot fail.
        if (journal_) lock_.rollback(&saved_);
    } else if (journal_) {
        s->c = c_;
    }
    if (journal_) s->journal.end();
    lock_.unlock();
}

}  // namespace sage
