// The Python module _native: its constants, errors (errors.h) and the ShmQueue class, each
// method a thin translation onto the core (shm_queue.h) through the binding's calls
// (calls.h); the per-item calls are vectorcall methods (fast_methods.h). The stub
// python/_native.pyi mirrors this table.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "calls.h"
#include "errors.h"
#include "fast_methods.h"
#include "gil_policy.h"
#include "item_codec.h"
#include "marshal.h"
#include "segment_file.h"
#include "shm_queue.h"

namespace py = pybind11;
using namespace sage;
using namespace sage::binding;

namespace {

py::bytes magic_bytes() {
    char bytes[sizeof kMagic];
    memcpy(bytes, &kMagic, sizeof kMagic);  // as it lies in a segment (little-endian)
    return py::bytes(bytes, sizeof bytes);
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Native core of sage_queue: a shared-memory MPMC queue of byte records";
    // Shared facts: the Python tools and the tests read these, never a copy of their own.
    m.attr("TAG_PICKLE") = kTagPickle;
    m.attr("TAG_BYTES") = kTagBytes;
    m.attr("TAG_BYTEARRAY") = kTagByteArray;
    m.attr("TAG_CODEC") = kTagCodec;
    m.attr("MAX_NAME_LENGTH") = kMaxNameLength;
    m.attr("LAYOUT_VERSION") = kLayoutVersion;
    m.attr("SEGMENT_DIR") = kShmDir;
    m.attr("SEGMENT_PREFIX") = kSegmentPrefix;
    m.attr("DEFAULT_CAPACITY_BYTES") = kDefaultCapacity;
    m.attr("DEFAULT_BATCH_BYTES") = kDefaultBatchBytes;
    m.attr("MAGIC") = magic_bytes();
    m.attr("PAGE_BYTES") = kPage;
    m.attr("INIT_WAIT_SECONDS") = kInitWaitSeconds;
    m.attr("CHILD_CLAIM_SECONDS") = kChildClaimSeconds;
    py::dict layout;
    for (const auto& [field, offset] : layout_offsets()) layout[py::str(field)] = offset;
    m.attr("LAYOUT") = layout;  // byte offsets of the shared layout's fields, for tools and tests

    init_errors(m);

    m.def("_set_support", [](py::object empty, py::object full, py::object closed) {
        support.empty = empty.release().ptr();
        support.full = full.release().ptr();
        support.closed = closed.release().ptr();
    }, py::arg("empty"), py::arg("full"), py::arg("closed"),
       "Set the exceptions raised for an empty, a full and a closed queue (the Python layer calls it once).");
    init_marshal();
    init_gil_policy();
    m.def("validate_name", &ShmQueue::validate_name, py::arg("name"),
          "Raise ValueError naming the offending character if `name` is not a valid queue name.");
    // The item codec on its own, for tests: the encoding, or None where pickle is used.
    m.def("_codec_encode", [](py::handle item) -> py::object {
        codec::ByteBuffer out;
        if (!codec::encode(item.ptr(), out)) return py::none();
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
    }, py::arg("item"), "The item codec's encoding of `item`, or None if it would be pickled (for tests).");
    m.def("_codec_decode", [](py::bytes data) {
        std::string_view v = data;
        return py::reinterpret_steal<py::object>(codec::decode(reinterpret_cast<const uint8_t*>(v.data()), v.size()));
    }, py::arg("data"), "Decode an item codec encoding (for tests).");

    // The destructor detaches, which may wait for the lock: never with the GIL held.
    py::class_<ShmQueue> cls(m, "ShmQueue", py::release_gil_before_calling_cpp_dtor(),
                         "A handle on a shared-memory queue; SageQueue is the class to use.");
    install_fast_methods(cls);  // put, put_nowait, get, get_nowait
    cls.def(py::init([](const std::string& name, uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                         const std::string& mode) {
                 OpenMode om = parse_mode(mode);
                 py::gil_scoped_release nogil;  // opening may wait for a creator
                 return new ShmQueue(name, capacity_bytes, maxsize, persistent, om);
             }),
             py::arg("name"), py::arg("capacity_bytes") = 0, py::arg("maxsize") = 0, py::arg("persistent") = false,
             py::arg("mode") = "open_or_create",
             "Open queue `name` or create it (mode: open_or_create, open_only, create_only, inspect). "
             "capacity_bytes and maxsize of 0 mean the existing queue's, or the defaults for a new one.")
        .def_property_readonly("name", &ShmQueue::name, "The queue's name (its file is /dev/shm/sage_queue.<name>).")
        .def_property_readonly("capacity_bytes", &ShmQueue::capacity_bytes, "Bytes in the shared ring.")
        .def_property_readonly("maxsize", &ShmQueue::maxsize, "Item limit as in queue.Queue; 0 for none.")
        .def_property_readonly("attached", &ShmQueue::attached, "Whether this handle is still attached.")
        .def_property_readonly("closed", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            return q.closed();
        }, "Whether close() was called (by any process): read from the shared flag, without the lock.")
        .def("put_many", [](ShmQueue& q, py::iterable items, bool block, py::handle timeout) {
            put_items(q, items, to_timeout(block, timeout));
        }, py::arg("items"), py::arg("block") = true, py::arg("timeout") = py::none(),
           "Put all `items` under one lock, all or none: block until there is room for all of them, "
           "or raise queue.Full and put nothing.")
        .def("get_many", [](ShmQueue& q, size_t max_items, bool block, py::handle timeout, uint64_t max_bytes) {
            double t = to_timeout(block, timeout);
            if (max_items < 1) raise(PyExc_ValueError, "max_items must be >= 1");
            return get_items(q, max_items, max_bytes, t);
        }, py::arg("max_items") = 64, py::arg("block") = true, py::arg("timeout") = py::none(),
           py::arg("max_bytes") = kDefaultBatchBytes,
           "Remove and return a list of 1 to max_items items under one lock, stopping past max_bytes "
           "payload bytes (the first item is always taken); blocks for the first one as get() does.")
        .def("qsize", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            return gil_held([&] { return q.qsize(); });
        }, "The number of items in the queue, exact across processes.")
        .def("empty", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            return gil_held([&] { return q.qsize(); }) == 0;
        }, "Whether the queue holds no item.")
        .def("full", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            return q.maxsize() > 0 && gil_held([&] { return q.qsize(); }) >= q.maxsize();
        }, "Whether the queue holds maxsize items (never, for maxsize=0).")
        .def("task_done", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            gil_held([&] { q.task_done(1); });
        }, "Mark one item got from the queue as processed, as queue.Queue.task_done (from any process).")
        .def("join", [](ShmQueue& q, py::handle timeout) {
            double t = to_timeout(true, timeout);
            ShmQueue::InUse in_use(q);
            Status st = blocking([&](double left) { return q.join(left); }, t);
            if (st == Status::closed) raise(support.closed, "queue was detached while joining");
            return st == Status::ok;
        }, py::arg("timeout") = py::none(),
           "Block until every item put has been task_done'd; False if the timeout passed first. Tasks of "
           "consumers that died are written off.")
        .def("close", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            q.close();
        }, "Close the queue for every process: puts raise QueueClosed, gets drain what is left and then "
           "raise it; blocked callers wake at once. The handle stays attached.")
        .def("unlink", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            q.unlink();
        }, "Remove the queue's name now; attached handles keep working.")
        .def("detach", &ShmQueue::detach, py::call_guard<py::gil_scoped_release>(),
             "Release this handle (idempotent); the last process to detach removes the segment unless "
             "it is persistent. Blocked calls of this handle end with QueueClosed.")
        .def("before_fork", [](ShmQueue& q) { gil_held([&] { q.before_fork(); }); },
             "Reserve a slot for a child about to be forked (os.register_at_fork calls it).")
        .def("after_fork_in_parent", [](ShmQueue& q) { q.after_fork_in_parent(); },
             "Hand the reserved slot to the forked child.")
        .def("after_fork_in_child", [](ShmQueue& q) { gil_held([&] { q.after_fork_in_child(); }); },
             "In a forked child: take over the slot the parent reserved, as a user of its own.")
        .def("info", [](ShmQueue& q) {
            ShmQueue::InUse in_use(q);
            return info_dict(gil_held([&] { return q.info(); }));
        }, "One consistent snapshot of the header: sizes, counters, stats, waiters and attached pids.");
}
