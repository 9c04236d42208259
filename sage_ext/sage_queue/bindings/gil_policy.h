// When the binding holds the GIL around core calls, and when it drops it.
//
// A call that does not block runs with the GIL held (gil_held), but never sleeps on a
// queue's lock with it: the core calls the lock-wait hook first, which drops the GIL until
// the call returns (the lock's holder, another thread of ours, may need the GIL to finish).
// A call that may block (blocking) runs with the GIL released, waking to run signal
// handlers as queue.Queue.get() does.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "shm_queue.h"

namespace sage::binding {

namespace py = pybind11;

inline thread_local bool gil_drop_armed = false;
inline thread_local PyThreadState* gil_dropped = nullptr;
inline unsigned long main_thread_ident = 0;  // threading.main_thread().ident: where signal handlers run
constexpr double kSignalSlice = 0.1;         // seconds a blocked main thread goes without running them

// Installs the lock-wait hook and notes the main thread; once, at import.
void init_gil_policy();

struct GilDropOnLockWait {  // around one non-blocking core call
    const bool outer = gil_drop_armed;
    GilDropOnLockWait() { gil_drop_armed = true; }
    ~GilDropOnLockWait() {
        gil_drop_armed = outer;
        if (gil_dropped) PyEval_RestoreThread(std::exchange(gil_dropped, nullptr));
    }
};

template <class Call>
auto gil_held(Call&& call) {
    GilDropOnLockWait guard;
    return call();
}

// A core call that may block (call(timeout) -> Status), run with the GIL released. Signal
// handlers run while it waits, as they do in queue.Queue.get(): a signal wakes the core
// (interrupted), and the main thread also looks every kSignalSlice, since a signal that
// lands while the core spins wakes nothing. A handler that raises (Ctrl-C) ends the call.
template <class Call>
Status blocking(Call&& call, double timeout) {
    const bool main = PyThread_get_thread_ident() == main_thread_ident;
    const double deadline = timeout < 0 ? INFINITY : monotonic_seconds() + timeout;
    for (;;) {
        const double left = std::max(0.0, deadline - monotonic_seconds());
        const double slice = main ? std::min(left, kSignalSlice) : left;
        Status st;
        {
            py::gil_scoped_release nogil;
            st = call(std::isinf(slice) ? kForever : slice);
        }
        if (st != Status::interrupted && !(st == Status::timeout && slice < left)) return st;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

}  // namespace sage::binding
