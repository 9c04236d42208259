// The lock-wait hook of the GIL policy (gil_policy.h).
#include "gil_policy.h"

namespace sage::binding {

namespace {

void lock_wait() {
    if (gil_drop_armed && !gil_dropped) gil_dropped = PyEval_SaveThread();
}

}  // namespace

void init_gil_policy() {
    main_thread_ident = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    set_lock_wait_hook(lock_wait);
}

}  // namespace sage::binding
