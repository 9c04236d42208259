// What a queue handle keeps privately: its segment, lock, slot and the state of the calls
// in flight. Read by the queue (queue_handle.cpp, shm_queue.cpp) and its users' bookkeeping (segment_users.cpp).
#pragma once

#include <atomic>
#include <string>

#include "process_identity.h"
#include "robust_lock.h"
#include "segment.h"
#include "segment_file.h"

namespace sage {

struct HandleState {
    explicit HandleState(const std::string& queue) : name(queue), me(self_identity()) {}

    std::string name;
    AttachedSegment segment;
    FileId file;  // the file we mapped: the name is removed only while it still refers to it
    ProcessIdentity me;
    SegmentLock lock{segment, name, me};
    int slot = -1;
    int fork_slot = -1;  // reserved by before_fork() for the child about to be born
    std::atomic<int> users{0};
    std::atomic<bool> detaching{false};
    std::atomic<double> spin_budget{20e-6};  // seconds; adapts to whether spinning pays off
};

}  // namespace sage
