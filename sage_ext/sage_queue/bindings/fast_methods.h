// put, put_nowait, get and get_nowait as CPython vectorcall methods. A small item's put or
// get costs the core a few hundred instructions; pybind11's generic dispatch (overload
// matching, argument casters, keyword defaults) costs more than that on every call, so the
// four per-item calls parse their arguments themselves. The batch calls stay with pybind11:
// one dispatch per batch is cheap.
#pragma once

#include <pybind11/pybind11.h>

#include "shm_queue.h"

namespace sage::binding {

// Adds the four methods to the class, with docstrings and text signatures for help().
void install_fast_methods(pybind11::class_<ShmQueue>& cls);

}  // namespace sage::binding
