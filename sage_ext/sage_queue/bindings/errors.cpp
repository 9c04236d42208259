// Translation of the core's exceptions (errors.h).
#include "errors.h"

#include <exception>
#include <new>

#include "shm_queue.h"

namespace sage::binding {

namespace py = pybind11;

namespace {

PyObject* corrupt_type = nullptr;
PyObject* untrusted_type = nullptr;

// Sets the Python error for the core's own exceptions; anything else propagates.
void translate_core_exception(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
        PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const SystemError& e) {
        py::object err = py::reinterpret_steal<py::object>(PyObject_CallFunction(PyExc_OSError, "is", e.err, e.what()));
        if (err) PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    } catch (const CorruptSegment& e) {
        PyErr_SetString(corrupt_type, e.what());
    } catch (const UntrustedSegment& e) {
        PyErr_SetString(untrusted_type, e.what());
    }
}

}  // namespace

void init_errors(py::module_& m) {
    static py::exception<CorruptSegment> corrupt(m, "SegmentCorruptError", PyExc_OSError);
    static py::exception<UntrustedSegment> untrusted(m, "SegmentUntrustedError", PyExc_PermissionError);
    corrupt_type = corrupt.ptr();
    untrusted_type = untrusted.ptr();
    py::register_exception_translator(&translate_core_exception);
}

void set_error_from_current_exception() {
    try {
        translate_core_exception(std::current_exception());
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (const py::builtin_exception& e) {
        e.set_error();
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception in sage_queue");
    }
}

}  // namespace sage::binding
