// The queue's lock: a process-shared robust mutex in the segment, and the locked section
// built on it, a small transaction with an undo journal. A holder that dies inside a
// section is rolled back by the next locker (EOWNERDEAD); a section that throws (a corrupt
// record, say) is rolled back the same way before the lock is released.
#pragma once

#include <cstdint>
#include <string>

#include "process_identity.h"
#include "segment.h"

namespace sage {

class SegmentLock {
public:
    // References, not copies: the segment is mapped and unmapped, and `me` changes at
    // fork, over the lock's life.
    SegmentLock(const AttachedSegment& segment, const std::string& queue, const ProcessIdentity& me)
        : a_(segment), queue_(queue), me_(me) {}
    SegmentLock(const SegmentLock&) = delete;
    SegmentLock& operator=(const SegmentLock&) = delete;

    // Takes the lock, rolling back the section of a holder that died inside it. Never
    // waits without end on a lock word no user wrote: throws CorruptSegment instead.
    void lock();
    void unlock();
    // Undoes a locked section: this thread's own (`own_saved`, the counters it started
    // from, held privately), or a dead holder's (nullptr: its journal, in shared memory that
    // anything may have written, is replayed only if it is consistent).
    void rollback(const Counters* own_saved);

    const AttachedSegment& segment() const { return a_; }
    const std::string& queue() const { return queue_; }

private:
    uint64_t progress() const;  // moves whenever the queue does

    const AttachedSegment& a_;
    const std::string& queue_;
    const ProcessIdentity& me_;
    // A lock word found corrupt, and the queue's progress then: while both stay, the next
    // call is refused at once instead of watching the same word again.
    int corrupt_word_ = 0;
    uint64_t corrupt_progress_ = 0;
};

// A locked section: the lock, the counters read once and checked, and unless
// journal=false the undo journal. Work is done on the section's copy of the counters,
// stored back when the section ends. If the section throws, its changes are rolled back
// and the lock released, exactly as if its holder had died.
class LockedSection {
public:
    LockedSection(SegmentLock& lock, int slot, bool journal = true);
    ~LockedSection();
    LockedSection(const LockedSection&) = delete;
    LockedSection& operator=(const LockedSection&) = delete;

    Counters& counters() { return c_; }  // checked; stored back at the end (journal sections)

private:
    SegmentLock& lock_;
    const bool journal_;
    const int exceptions_;
    Counters c_;
    Counters saved_;
};

}  // namespace sage
