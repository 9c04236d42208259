// The per-item calls as vectorcall methods (fast_methods.h).
#include "fast_methods.h"

#include <cstring>

#include "calls.h"
#include "errors.h"
#include "marshal.h"

namespace sage::binding {

namespace py = pybind11;

namespace {

PyTypeObject* queue_type = nullptr;

// The ShmQueue inside `self`, or nullptr with TypeError set (a subclass whose __init__
// never ran the native one holds none).
ShmQueue* queue_of(PyObject* self) {
    if (!PyObject_TypeCheck(self, queue_type)) {
        PyErr_Format(PyExc_TypeError, "descriptor needs a ShmQueue, not '%s'", Py_TYPE(self)->tp_name);
        return nullptr;
    }
    auto* inst = reinterpret_cast<py::detail::instance*>(self);
    py::detail::value_and_holder v = inst->get_value_and_holder(nullptr, false);
    if (!v || !v.holder_constructed() || !v.value_ptr()) {
        PyErr_SetString(PyExc_TypeError, "the queue was never opened: its __init__() did not call ShmQueue.__init__()");
        return nullptr;
    }
    return v.value_ptr<ShmQueue>();
}

// Positional arguments, then keywords by name, into `out` (nullptr where not given), as
// CPython's own argument clinic would: too many, unknown, repeated or missing arguments
// are a TypeError naming the method and the argument.
bool parse(const char* method, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
           const char* const* names, Py_ssize_t nnames, Py_ssize_t required, PyObject** out) {
    for (Py_ssize_t i = 0; i < nnames; ++i) out[i] = nullptr;
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", method, nnames, nargs);
        return false;
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; ++k) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < nnames && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) ++i;
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", method, key);
            return false;
        }
        if (out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", method, names[i]);
            return false;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; ++i) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", method, names[i]);
            return false;
        }
    }
    return true;
}

// block and timeout as queue.Queue reads them: any truth value; None waits without limit.
bool timeout_of(PyObject* block, PyObject* timeout, double& out) {
    int blocking = block ? PyObject_IsTrue(block) : 1;
    if (blocking < 0) return false;
    out = to_timeout(blocking != 0, timeout ? timeout : Py_None);
    return true;
}

PyObject* put(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    static const char* const names[] = {"item", "block", "timeout"};
    try {
        PyObject* a[3];
        double timeout;
        ShmQueue* q = queue_of(self);
        if (!q || !parse("put", args, PyVectorcall_NARGS(nargsf), kwnames, names, 3, 1, a) ||
            !timeout_of(a[1], a[2], timeout))
            return nullptr;
        put_one(*q, a[0], timeout);
        Py_RETURN_NONE;
    } catch (...) {
        set_error_from_current_exception();
        return nullptr;
    }
}

PyObject* put_nowait(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    static const char* const names[] = {"item"};
    try {
        PyObject* a[1];
        ShmQueue* q = queue_of(self);
        if (!q || !parse("put_nowait", args, PyVectorcall_NARGS(nargsf), kwnames, names, 1, 1, a)) return nullptr;
        put_one(*q, a[0], 0);
        Py_RETURN_NONE;
    } catch (...) {
        set_error_from_current_exception();
        return nullptr;
    }
}

PyObject* get(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    static const char* const names[] = {"block", "timeout"};
    try {
        PyObject* a[2];
        double timeout;
        ShmQueue* q = queue_of(self);
        if (!q || !parse("get", args, PyVectorcall_NARGS(nargsf), kwnames, names, 2, 0, a) ||
            !timeout_of(a[0], a[1], timeout))
            return nullptr;
        return get_one(*q, timeout).release().ptr();
    } catch (...) {
        set_error_from_current_exception();
        return nullptr;
    }
}

PyObject* get_nowait(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    try {
        PyObject* a[1];
        ShmQueue* q = queue_of(self);
        if (!q || !parse("get_nowait", args, PyVectorcall_NARGS(nargsf), kwnames, nullptr, 0, 0, a)) return nullptr;
        return get_one(*q, 0).release().ptr();
    } catch (...) {
        set_error_from_current_exception();
        return nullptr;
    }
}

// The first line of each docstring is its signature, for inspect.signature() and help().
PyMethodDef methods[] = {
    {"put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(put)), METH_FASTCALL | METH_KEYWORDS,
     "put($self, /, item, block=True, timeout=None)\n--\n\n"
     "Put `item` into the queue, as queue.Queue.put: block until there is room (timeout=None: "
     "without limit), or raise queue.Full. Raises QueueClosed if the queue is closed, ValueError if "
     "the item is larger than the ring, the serializer's error if it cannot be pickled; a failed put "
     "leaves the queue as it was."},
    {"put_nowait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(put_nowait)),
     METH_FASTCALL | METH_KEYWORDS,
     "put_nowait($self, /, item)\n--\n\nPut `item` without blocking: queue.Full if there is no room now."},
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(get)), METH_FASTCALL | METH_KEYWORDS,
     "get($self, /, block=True, timeout=None)\n--\n\n"
     "Remove and return an item, as queue.Queue.get: block until one is there (timeout=None: "
     "without limit), or raise queue.Empty. Raises QueueClosed once the queue is closed and empty."},
    {"get_nowait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(get_nowait)),
     METH_FASTCALL | METH_KEYWORDS,
     "get_nowait($self, /)\n--\n\nRemove and return an item without blocking: queue.Empty if there is none now."},
};

}  // namespace

void install_fast_methods(py::class_<ShmQueue>& cls) {
    queue_type = reinterpret_cast<PyTypeObject*>(cls.ptr());
    for (PyMethodDef& def : methods) {
        py::object descriptor = py::reinterpret_steal<py::object>(PyDescr_NewMethod(queue_type, &def));
        if (!descriptor) throw py::error_already_set();
        cls.attr(def.ml_name) = descriptor;
    }
}

}  // namespace sage::binding
