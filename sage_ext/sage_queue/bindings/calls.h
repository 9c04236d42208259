// The queue's calls as the binding runs them: the GIL policy (gil_policy.h) applied, the
// items marshalled (marshal.h), and the core's statuses turned into queue.Queue's
// exceptions (queue.Full, queue.Empty) or QueueClosed.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "marshal.h"
#include "shm_queue.h"

namespace sage::binding {

// Each takes the handle in use for its whole length (ShmQueue::InUse).
void put_one(ShmQueue& q, pybind11::handle item, double timeout);
void put_items(ShmQueue& q, pybind11::iterable items, double timeout);
pybind11::object get_one(ShmQueue& q, double timeout);
pybind11::list get_items(ShmQueue& q, size_t max_items, uint64_t max_bytes, double timeout);

}  // namespace sage::binding
