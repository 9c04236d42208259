// Who may hold a queue's lock: the checks a waiter makes so that a lock word no user
// wrote (a corrupt segment) is reported instead of waited on forever.
//
// A holder keeps the lock for microseconds, never sleeps inside it, and is a live thread
// with the segment mapped. A word naming anything else was not written by a lock.
#pragma once

#include <cstdint>
#include <string>

namespace sage {

// Threads of this process mark when they are inside lock()..unlock(): a lock word naming
// a thread of ours that is outside is corrupt.
void enter_locking();
void leave_locking();

#if defined(__GLIBC__)
// The __kind glibc gives a robust process-shared mutex.
int robust_shared_mutex_kind();
#endif

// Watches the holder named by a lock word across the slices of one wait for the lock.
class HolderWatch {
public:
    // After a slice that timed out: why the holder named by `seen` cannot hold the lock of
    // the segment mapped at `segment`, or "" to keep waiting. `word` is the lock word (read
    // again to rule out a holder that just left), `progress` a number that moves whenever
    // the queue does, `foreign_users` whether users of another pid namespace are attached
    // (their thread ids mean nothing here).
    std::string look(int seen, const int* word, const void* segment, uint64_t progress, bool foreign_users);

private:
    int word_ = 0;
    uint64_t progress_ = 0;
    double since_ = 0;
    bool always_asleep_ = true;
};

}  // namespace sage
