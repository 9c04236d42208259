// Marshalling (marshal.h): encoding in the caller, decoding from the ring.
#include "marshal.h"

#include <cmath>
#include <cstring>

namespace sage::binding {

Support support;
Encoder encoder;

void raise(PyObject* type, const char* msg) {
    if (!type) type = PyExc_RuntimeError;
    PyErr_SetString(type, msg);
    throw py::error_already_set();
}

void init_marshal() {
    py::module_ pickle = py::module_::import("pickle");
    support.loads = py::object(pickle.attr("loads")).release().ptr();
    support.buffers_kw = py::str("buffers").release().ptr();
    encoder.dumps = py::object(pickle.attr("dumps")).release().ptr();
    encoder.protocol = py::int_(5).release().ptr();
    encoder.kwnames = py::make_tuple("buffer_callback").release().ptr();
    py::list oob;
    encoder.oob_append = py::object(oob.attr("append")).release().ptr();
    encoder.oob = oob.release().ptr();
}

namespace {

py::object copy_out(const uint8_t* data, uint64_t len, bool as_bytearray) {
    PyObject* obj = as_bytearray ? PyByteArray_FromStringAndSize(nullptr, Py_ssize_t(len))
                                 : PyBytes_FromStringAndSize(nullptr, Py_ssize_t(len));
    if (!obj) throw py::error_already_set();
    char* dst = as_bytearray ? PyByteArray_AS_STRING(obj) : PyBytes_AS_STRING(obj);
    if (len >= kLargeCopy) {
        py::gil_scoped_release nogil;
        memcpy(dst, data, len);
    } else if (len) {
        memcpy(dst, data, len);
    }
    return py::reinterpret_steal<py::object>(obj);
}

constexpr size_t kSmallPickle = 16 * 1024;  // below this a bytes copy is cheaper than a view

}  // namespace

py::object decode(const RecordView& r) {
    if (r.tag == kTagCodec) return py::reinterpret_steal<py::object>(codec::decode(r.payload, r.len));
    if (r.tag == kTagBytes || r.tag == kTagByteArray) return copy_out(r.payload, r.len, r.tag == kTagByteArray);
    if (r.tag != kTagPickle || r.nparts == 0) throw CorruptSegment("record with unknown tag " + std::to_string(r.tag));
    // Layout with out-of-band buffers: nparts u64 lengths, the pickle, then each buffer.
    // The lengths are read once, into private memory, and each checked against what is
    // left of the record before it is used.
    thread_local std::vector<uint64_t> lengths;
    const uint8_t* pickle = r.payload;
    uint64_t pickle_len = r.len;
    const bool with_buffers = r.nparts > 1;
    if (with_buffers) {
        const uint64_t table = 8ULL * r.nparts;
        if (table > r.len) throw CorruptSegment("record parts do not fit in the record");
        lengths.resize(r.nparts);
        memcpy(lengths.data(), r.payload, table);
        uint64_t left = r.len - table;
        for (uint64_t len : lengths) {
            if (len > left) throw CorruptSegment("record parts do not fit in the record");
            left -= len;
        }
        if (left != 0) throw CorruptSegment("record parts do not add up to its length");
        pickle += table;
        pickle_len = lengths[0];
    }
    // Small pickles are copied out (one allocation); large ones are unpickled straight
    // from shared memory. Out-of-band buffers get one copy each: objects built on them
    // outlive the record.
    py::object source;
    const bool small = pickle_len <= kSmallPickle;
    if (small) {
        source = copy_out(pickle, pickle_len, false);
    } else {
        source = py::reinterpret_steal<py::object>(PyMemoryView_FromMemory(
            reinterpret_cast<char*>(const_cast<uint8_t*>(pickle)), Py_ssize_t(pickle_len), PyBUF_READ));
        if (!source) throw py::error_already_set();
    }
    PyObject* result;
    if (!with_buffers) {
        result = PyObject_CallOneArg(support.loads, source.ptr());
    } else {
        py::list bufs;
        const uint8_t* at = pickle + pickle_len;
        for (size_t k = 1; k < lengths.size(); ++k) {  // copy_out runs no Python code: no reentry
            const uint64_t len = lengths[k];
            bufs.append(copy_out(at, len, true));
            at += len;
        }
        py::tuple args = py::make_tuple(source);
        py::dict kwargs;
        kwargs[support.buffers_kw] = bufs;
        result = PyObject_Call(support.loads, args.ptr(), kwargs.ptr());
    }
    if (!small && Py_REFCNT(source.ptr()) > 1) {  // someone kept the view: cut it off before reuse
        py::object released = py::reinterpret_steal<py::object>(PyObject_CallMethod(source.ptr(), "release", nullptr));
        if (!released) PyErr_Clear();
    }
    if (!result) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(result);
}

void Encoder::add(Batch& b, PyObject* item) {
    if (PyBytes_CheckExact(item) || PyMemoryView_Check(item)) return b.add(kTagBytes, item, nullptr);
    if (PyByteArray_CheckExact(item)) return b.add(kTagByteArray, item, nullptr);
    size_t offset = b.encoded.size();
    if (codec::encode(item, b.encoded)) return b.add_encoded(kTagCodec, offset);
    py::object fresh_list, fresh_append;
    PyObject* list = oob;
    PyObject* append = oob_append;
    if (busy) {
        fresh_list = py::list();
        fresh_append = fresh_list.attr("append");
        list = fresh_list.ptr();
        append = fresh_append.ptr();
    }
    bool was_busy = busy;
    busy = true;
    PyObject* args[] = {item, protocol, append};
    PyObject* data = PyObject_Vectorcall(dumps, args, 2, kwnames);
    busy = was_busy;
    if (!data) {
        PyList_SetSlice(list, 0, PY_SSIZE_T_MAX, nullptr);
        throw py::error_already_set();
    }
    py::object keep = py::reinterpret_steal<py::object>(data);
    // The held Py_buffers keep the pickle and each out-of-band buffer alive.
    b.add(kTagPickle, data, PyList_GET_SIZE(list) ? list : nullptr);
    PyList_SetSlice(list, 0, PY_SSIZE_T_MAX, nullptr);
}

double to_timeout(bool block, py::handle timeout) {
    if (!block) return 0;
    if (timeout.is_none()) return kForever;
    double t = PyFloat_AsDouble(timeout.ptr());
    if (t == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (t < 0 || std::isnan(t)) raise(PyExc_ValueError, "'timeout' must be a non-negative number");
    return t;
}

OpenMode parse_mode(const std::string& mode) {
    if (mode == "open_or_create") return OpenMode::open_or_create;
    if (mode == "open_only") return OpenMode::open_only;
    if (mode == "create_only") return OpenMode::create_only;
    if (mode == "inspect") return OpenMode::inspect;
    throw InvalidArgument("mode must be open_or_create, open_only, create_only or inspect, got '" + mode + "'");
}

py::dict info_dict(const Info& in) {
    py::dict d, stats;
    d["capacity_bytes"] = in.capacity_bytes;
    d["maxsize"] = in.maxsize;
    d["items"] = in.items;
    d["unfinished_tasks"] = in.unfinished;
    d["used_bytes"] = in.used_bytes;
    d["head"] = in.head;
    d["read"] = in.read;
    d["tail"] = in.tail;
    d["closed"] = in.closed;
    d["persistent"] = in.persistent;
    d["layout_version"] = in.version;
    d["creator_pid"] = in.creator_pid;
    stats["puts"] = in.stats.puts;
    stats["gets"] = in.stats.gets;
    stats["bytes_put"] = in.stats.bytes_put;
    stats["bytes_got"] = in.stats.bytes_got;
    stats["abandoned_records"] = in.stats.abandoned_records;
    stats["reclaimed_records"] = in.stats.reclaimed_records;
    stats["written_off_tasks"] = in.stats.written_off_tasks;
    stats["lock_recoveries"] = in.stats.lock_recoveries;
    d["stats"] = stats;
    py::list attached;
    for (auto& [pid, liveness] : in.attached)
        attached.append(py::make_tuple(pid, liveness == Liveness::alive  ? "alive"
                                            : liveness == Liveness::dead ? "dead"
                                                                               : "unknown"));
    d["attached"] = attached;
    py::dict waiters;
    waiters["get"] = in.waiting_getters;
    waiters["put"] = in.waiting_putters;
    waiters["join"] = in.waiting_joiners;
    d["waiters"] = waiters;
    return d;
}

}  // namespace sage::binding
