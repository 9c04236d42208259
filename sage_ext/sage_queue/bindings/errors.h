// The core's C++ exceptions as Python exceptions: InvalidArgument -> ValueError,
// SystemError -> OSError with its errno, CorruptSegment -> SegmentCorruptError (an OSError),
// UntrustedSegment -> SegmentUntrustedError (a PermissionError).
#pragma once

#include <pybind11/pybind11.h>

namespace sage::binding {

// Creates the two error types on the module and registers the translation with pybind11.
void init_errors(pybind11::module_& m);

// Inside a catch block of a function that is not dispatched by pybind11: sets the exception
// being handled as the Python error, translated as pybind11 would.
void set_error_from_current_exception();

}  // namespace sage::binding
