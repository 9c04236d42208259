// Python binding of the native queue: translates buffers, statuses and errors,
// and decides when to drop the GIL (only to block or to copy large payloads).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "item_codec.h"
#include "shm_queue.h"

namespace py = pybind11;
using sage::Status;

namespace {

// Record tags; the Python layer uses the same numbers.
constexpr uint8_t kTagPickle = 0;     // parts: pickle stream, then out-of-band buffers
constexpr uint8_t kTagBytes = 1;      // parts: the bytes themselves
constexpr uint8_t kTagByteArray = 2;  // parts: the bytearray's contents
constexpr uint8_t kTagCodec = 3;      // parts: the item codec's encoding (item_codec.h)
constexpr size_t kLargeCopy = 64 * 1024;  // above this, copy with the GIL released

struct Support {  // set once by the Python layer
    PyObject* empty = nullptr;
    PyObject* full = nullptr;
    PyObject* closed = nullptr;
    PyObject* loads = nullptr;
    PyObject* buffers_kw = nullptr;
} support;

[[noreturn]] void raise(PyObject* type, const char* msg) {
    if (!type) type = PyExc_RuntimeError;
    PyErr_SetString(type, msg);
    throw py::error_already_set();
}

struct Buffer {  // a held Py_buffer, released on scope exit
    Py_buffer view{};
    bool held = false;
    Buffer() = default;
    explicit Buffer(PyObject* obj) {
        if (PyObject_GetBuffer(obj, &view, PyBUF_ANY_CONTIGUOUS) != 0) throw py::error_already_set();
        held = true;
    }
    Buffer(Buffer&& o) noexcept : view(o.view), held(o.held) { o.held = false; }
    Buffer(const Buffer&) = delete;
    ~Buffer() {
        if (held) PyBuffer_Release(&view);
    }
};

// Messages built from Python objects; owns the buffers while the core copies them.
struct Batch {
    std::vector<Buffer> buffers;
    std::vector<sage::Part> parts;
    std::vector<sage::Message> msgs;
    std::vector<size_t> first_part;
    sage::codec::ByteBuffer encoded;  // the item codec's output, for every codec item of the batch
    std::vector<std::pair<size_t, size_t>> encoded_parts;  // (part index, offset in `encoded`)
    size_t bytes = 0;

    // The item's encoding is already at the end of `encoded`, from `offset` on.
    void add_encoded(uint8_t tag, size_t offset) {
        first_part.push_back(parts.size());
        encoded_parts.push_back({parts.size(), offset});
        parts.push_back({nullptr, encoded.size() - offset});
        bytes += encoded.size() - offset;
        msgs.push_back({tag, nullptr, 1});
    }

    void add(uint8_t tag, PyObject* data, PyObject* oob) {
        first_part.push_back(parts.size());
        add_part(data);
        uint16_t n = 1;
        if (oob && oob != Py_None) {
            PyObject* seq = PySequence_Fast(oob, "out-of-band buffers must be a sequence");
            if (!seq) throw py::error_already_set();
            py::object keep = py::reinterpret_steal<py::object>(seq);
            Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
            if (k > 65534) raise(PyExc_ValueError, "too many out-of-band buffers in one item (limit 65534)");
            for (Py_ssize_t i = 0; i < k; ++i) add_part(PySequence_Fast_GET_ITEM(seq, i));
            n += uint16_t(k);
        }
        msgs.push_back({tag, nullptr, n});
    }
    void add_part(PyObject* obj) {
        buffers.emplace_back(obj);
        const Py_buffer& v = buffers.back().view;
        parts.push_back({v.buf, size_t(v.len)});
        bytes += size_t(v.len);
    }
    void finish() {  // parts and `encoded` no longer move: point the messages at them
        for (auto [part, offset] : encoded_parts) parts[part].data = encoded.data() + offset;
        for (size_t i = 0; i < msgs.size(); ++i) msgs[i].parts = parts.data() + first_part[i];
    }
    void clear() {  // needs the GIL: releases the held buffers
        buffers.clear();
        parts.clear();
        msgs.clear();
        first_part.clear();
        encoded.clear();
        encoded_parts.clear();
        bytes = 0;
    }
    bool oversized() const { return buffers.capacity() > 4096 || encoded.capacity() > (1 << 20); }
};

// Per-thread reuse of scratch objects, so the hot path does not allocate. A call
// nested inside pickling (a __reduce__ or __setstate__ that uses a queue) takes its own.
template <class T>
class Pooled {
public:
    Pooled() {
        auto& free = pool();
        if (free.empty()) {
            obj_ = std::make_unique<T>();
        } else {
            obj_ = std::move(free.back());
            free.pop_back();
        }
    }
    ~Pooled() {
        obj_->clear();
        auto& free = pool();
        if (free.size() < 8 && !oversized(*obj_)) free.push_back(std::move(obj_));
    }
    Pooled(const Pooled&) = delete;
    Pooled& operator=(const Pooled&) = delete;
    T& operator*() { return *obj_; }
    T* operator->() { return obj_.get(); }

private:
    static std::vector<std::unique_ptr<T>>& pool() {
        thread_local std::vector<std::unique_ptr<T>> free;
        return free;
    }
    static bool oversized(const Batch& b) { return b.oversized(); }
    template <class V>
    static bool oversized(const V& v) { return v.capacity() > 4096; }
    std::unique_ptr<T> obj_;
};
using Records = std::vector<sage::RecordView>;

// -- the GIL around core calls
//
// A call that does not block runs with the GIL held, but never sleeps on a queue's lock
// with it: the core calls lock_wait() first, which drops the GIL until the call returns
// (the lock's holder, another thread of ours, may need the GIL to finish).
thread_local bool gil_drop_armed = false;
thread_local PyThreadState* gil_dropped = nullptr;

void lock_wait() {
    if (gil_drop_armed && !gil_dropped) gil_dropped = PyEval_SaveThread();
}

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

unsigned long main_thread_ident = 0;  // threading.main_thread().ident: where signal handlers run
constexpr double kSignalSlice = 0.1;  // seconds a blocked main thread goes without running them

// A core call that may block (call(timeout) -> Status), run with the GIL released. Signal
// handlers run while it waits, as they do in queue.Queue.get(): a signal wakes the core
// (interrupted), and the main thread also looks every kSignalSlice, since a signal that
// lands while the core spins wakes nothing. A handler that raises (Ctrl-C) ends the call.
template <class Call>
Status blocking(Call&& call, double timeout) {
    const bool main = PyThread_get_thread_ident() == main_thread_ident;
    const double deadline = timeout < 0 ? INFINITY : sage::monotonic_seconds() + timeout;
    for (;;) {
        const double left = std::max(0.0, deadline - sage::monotonic_seconds());
        const double slice = main ? std::min(left, kSignalSlice) : left;
        Status st;
        {
            py::gil_scoped_release nogil;
            st = call(std::isinf(slice) ? sage::kForever : slice);
        }
        if (st != Status::interrupted && !(st == Status::timeout && slice < left)) return st;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

Status put_batch(sage::ShmQueue& q, Batch& b, double timeout) {
    b.finish();
    auto put = [&](double t) { return q.put_many(b.msgs.data(), b.msgs.size(), t); };
    if (b.bytes < kLargeCopy) {
        Status st = gil_held([&] { return put(0); });
        if (st != Status::timeout || timeout == 0) return st;
    } else if (timeout == 0) {
        py::gil_scoped_release nogil;  // the copy
        return put(0);
    }
    return blocking(put, timeout);
}

void check_put(Status st) {
    if (st == Status::timeout) raise(support.full, "");
    if (st == Status::closed) raise(support.closed, "queue is closed");
}

Status claim(sage::ShmQueue& q, size_t max_items, uint64_t max_bytes, double timeout,
             std::vector<sage::RecordView>& out) {
    Status st = gil_held([&] { return q.claim(max_items, max_bytes, 0, out); });
    if (st != Status::timeout || timeout == 0) return st;
    return blocking([&](double t) { return q.claim(max_items, max_bytes, t, out); }, timeout);
}

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

py::object decode(const sage::RecordView& r) {
    if (r.tag == kTagCodec) return py::reinterpret_steal<py::object>(sage::codec::decode(r.payload, r.len));
    if (r.tag == kTagBytes || r.tag == kTagByteArray) return copy_out(r.payload, r.len, r.tag == kTagByteArray);
    if (r.tag != kTagPickle || r.nparts == 0) throw sage::CorruptSegment("record with unknown tag " + std::to_string(r.tag));
    // Layout with out-of-band buffers: nparts u64 lengths, the pickle, then each buffer.
    // The lengths are read once, into private memory, and each checked against what is
    // left of the record before it is used.
    thread_local std::vector<uint64_t> lengths;
    const uint8_t* pickle = r.payload;
    uint64_t pickle_len = r.len;
    const bool with_buffers = r.nparts > 1;
    if (with_buffers) {
        const uint64_t table = 8ULL * r.nparts;
        if (table > r.len) throw sage::CorruptSegment("record parts do not fit in the record");
        lengths.resize(r.nparts);
        memcpy(lengths.data(), r.payload, table);
        uint64_t left = r.len - table;
        for (uint64_t len : lengths) {
            if (len > left) throw sage::CorruptSegment("record parts do not fit in the record");
            left -= len;
        }
        if (left != 0) throw sage::CorruptSegment("record parts do not add up to its length");
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

// Frees claimed records even when decoding raises.
struct ReleaseGuard {
    sage::ShmQueue& q;
    std::vector<sage::RecordView>& records;
    ~ReleaseGuard() { q.release(records); }
};

// The stdlib's meaning: block=False never waits; timeout=None waits forever.
double to_timeout(bool block, py::handle timeout) {
    if (!block) return 0;
    if (timeout.is_none()) return sage::kForever;
    double t = PyFloat_AsDouble(timeout.ptr());
    if (t == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    if (t < 0 || std::isnan(t)) raise(PyExc_ValueError, "'timeout' must be a non-negative number");
    return t;
}

// In the caller: bytes-like items travel raw, small plain trees through the item codec,
// everything else as pickle protocol 5.
struct Encoder {
    PyObject* dumps = nullptr;
    PyObject* protocol = nullptr;
    PyObject* kwnames = nullptr;  // ("buffer_callback",)
    PyObject* oob = nullptr;      // reused list of out-of-band buffers
    PyObject* oob_append = nullptr;
    bool busy = false;            // a __reduce__ may put into another queue

    void add(Batch& b, PyObject* item) {
        if (PyBytes_CheckExact(item) || PyMemoryView_Check(item)) return b.add(kTagBytes, item, nullptr);
        if (PyByteArray_CheckExact(item)) return b.add(kTagByteArray, item, nullptr);
        size_t offset = b.encoded.size();
        if (sage::codec::encode(item, b.encoded)) return b.add_encoded(kTagCodec, offset);
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
} encoder;

py::object get_one(sage::ShmQueue& q, double timeout) {
    sage::ShmQueue::InUse in_use(q);
    Pooled<Records> got;
    Status st = claim(q, 1, UINT64_MAX, timeout, *got);
    if (st == Status::timeout) raise(support.empty, "");
    if (st == Status::closed) raise(support.closed, "queue is closed and empty");
    ReleaseGuard guard{q, *got};
    return decode((*got)[0]);
}

sage::OpenMode parse_mode(const std::string& mode) {
    if (mode == "open_or_create") return sage::OpenMode::open_or_create;
    if (mode == "open_only") return sage::OpenMode::open_only;
    if (mode == "create_only") return sage::OpenMode::create_only;
    if (mode == "inspect") return sage::OpenMode::inspect;
    throw sage::InvalidArgument("mode must be open_or_create, open_only, create_only or inspect, got '" + mode + "'");
}

py::dict info_dict(const sage::Info& in) {
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
        attached.append(py::make_tuple(pid, liveness == sage::Liveness::alive  ? "alive"
                                            : liveness == sage::Liveness::dead ? "dead"
                                                                               : "unknown"));
    d["attached"] = attached;
    py::dict waiters;
    waiters["get"] = in.waiting_getters;
    waiters["put"] = in.waiting_putters;
    waiters["join"] = in.waiting_joiners;
    d["waiters"] = waiters;
    return d;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Native core of sage_queue: a shared-memory MPMC queue of byte records";
    m.attr("TAG_PICKLE") = kTagPickle;
    m.attr("TAG_BYTES") = kTagBytes;
    m.attr("TAG_BYTEARRAY") = kTagByteArray;
    m.attr("TAG_CODEC") = kTagCodec;
    m.attr("RECORD_HEADER_BYTES") = sage::kRecordHeader;
    m.attr("MAX_NAME_LENGTH") = sage::kMaxNameLength;
    m.attr("LAYOUT_VERSION") = sage::kLayoutVersion;
    py::dict layout;
    for (const auto& [field, offset] : sage::layout_offsets()) layout[py::str(field)] = offset;
    m.attr("LAYOUT") = layout;  // byte offsets of the shared layout's fields, for tools and tests

    static py::exception<sage::CorruptSegment> corrupt(m, "SegmentCorruptError", PyExc_OSError);
    static py::exception<sage::UntrustedSegment> untrusted(m, "SegmentUntrustedError", PyExc_PermissionError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const sage::InvalidArgument& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const sage::SystemError& e) {
            py::object err = py::reinterpret_steal<py::object>(
                PyObject_CallFunction(PyExc_OSError, "is", e.err, e.what()));
            if (err) PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
        } catch (const sage::CorruptSegment& e) {
            py::set_error(corrupt, e.what());
        } catch (const sage::UntrustedSegment& e) {
            py::set_error(untrusted, e.what());
        }
    });

    m.def("_set_support", [](py::object empty, py::object full, py::object closed) {
        support.empty = empty.release().ptr();
        support.full = full.release().ptr();
        support.closed = closed.release().ptr();
    });
    py::module_ pickle = py::module_::import("pickle");
    support.loads = py::object(pickle.attr("loads")).release().ptr();
    support.buffers_kw = py::str("buffers").release().ptr();
    encoder.dumps = py::object(pickle.attr("dumps")).release().ptr();
    encoder.protocol = py::int_(5).release().ptr();
    encoder.kwnames = py::make_tuple("buffer_callback").release().ptr();
    py::list oob;
    encoder.oob_append = py::object(oob.attr("append")).release().ptr();
    encoder.oob = oob.release().ptr();
    main_thread_ident = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    sage::set_lock_wait_hook(lock_wait);
    m.def("validate_name", &sage::ShmQueue::validate_name);
    // The item codec on its own, for tests: the encoding, or None where pickle is used.
    m.def("_codec_encode", [](py::handle item) -> py::object {
        sage::codec::ByteBuffer out;
        if (!sage::codec::encode(item.ptr(), out)) return py::none();
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
    });
    m.def("_codec_decode", [](py::bytes data) {
        std::string_view v = data;
        return py::reinterpret_steal<py::object>(
            sage::codec::decode(reinterpret_cast<const uint8_t*>(v.data()), v.size()));
    });
    m.def("segment_path", &sage::ShmQueue::segment_path);

    // The destructor detaches, which may wait for the lock: never with the GIL held.
    py::class_<sage::ShmQueue>(m, "ShmQueue", py::release_gil_before_calling_cpp_dtor())
        .def(py::init([](const std::string& name, uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                         const std::string& mode) {
                 sage::OpenMode om = parse_mode(mode);
                 py::gil_scoped_release nogil;  // opening may wait for a creator
                 return new sage::ShmQueue(name, capacity_bytes, maxsize, persistent, om);
             }),
             py::arg("name"), py::arg("capacity_bytes") = 0, py::arg("maxsize") = 0, py::arg("persistent") = false,
             py::arg("mode") = "open_or_create")
        .def_property_readonly("name", &sage::ShmQueue::name)
        .def_property_readonly("capacity_bytes", &sage::ShmQueue::capacity_bytes)
        .def_property_readonly("maxsize", &sage::ShmQueue::maxsize)
        .def_property_readonly("attached", &sage::ShmQueue::attached)
        .def("put", [](sage::ShmQueue& q, py::handle item, bool block, py::handle timeout) {
            sage::ShmQueue::InUse in_use(q);
            double t = to_timeout(block, timeout);
            Pooled<Batch> b;
            encoder.add(*b, item.ptr());
            check_put(put_batch(q, *b, t));
        }, py::arg("item"), py::arg("block") = true, py::arg("timeout") = py::none())
        .def("put_nowait", [](sage::ShmQueue& q, py::handle item) {
            sage::ShmQueue::InUse in_use(q);
            Pooled<Batch> b;
            encoder.add(*b, item.ptr());
            check_put(put_batch(q, *b, 0));
        }, py::arg("item"))
        .def("put_many", [](sage::ShmQueue& q, py::iterable items, bool block, py::handle timeout) {
            sage::ShmQueue::InUse in_use(q);
            double t = to_timeout(block, timeout);
            Pooled<Batch> b;
            for (py::handle item : items) encoder.add(*b, item.ptr());
            check_put(put_batch(q, *b, t));
        }, py::arg("items"), py::arg("block") = true, py::arg("timeout") = py::none())
        .def("get", [](sage::ShmQueue& q, bool block, py::handle timeout) {
            return get_one(q, to_timeout(block, timeout));
        }, py::arg("block") = true, py::arg("timeout") = py::none())
        .def("get_nowait", [](sage::ShmQueue& q) { return get_one(q, 0); })
        .def("get_many", [](sage::ShmQueue& q, size_t max_items, bool block, py::handle timeout, uint64_t max_bytes) {
            sage::ShmQueue::InUse in_use(q);
            double t = to_timeout(block, timeout);
            if (max_items < 1) raise(PyExc_ValueError, "max_items must be >= 1");
            Pooled<Records> got;
            Status st = claim(q, max_items, max_bytes, t, *got);
            if (st == Status::timeout) raise(support.empty, "");
            if (st == Status::closed) raise(support.closed, "queue is closed and empty");
            ReleaseGuard guard{q, *got};
            py::list out(got->size());
            for (size_t i = 0; i < got->size(); ++i) out[i] = decode((*got)[i]);
            return out;
        }, py::arg("max_items") = 64, py::arg("block") = true, py::arg("timeout") = py::none(),
           py::arg("max_bytes") = uint64_t(16) << 20)
        .def("qsize", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            return gil_held([&] { return q.qsize(); });
        })
        .def("empty", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            return gil_held([&] { return q.qsize(); }) == 0;
        })
        .def("full", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            return q.maxsize() > 0 && gil_held([&] { return q.qsize(); }) >= q.maxsize();
        })
        .def("task_done", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            gil_held([&] { q.task_done(1); });
        })
        .def("join", [](sage::ShmQueue& q, py::handle timeout) {
            double t = to_timeout(true, timeout);
            sage::ShmQueue::InUse in_use(q);
            Status st = blocking([&](double left) { return q.join(left); }, t);
            if (st == Status::closed) raise(support.closed, "queue was detached while joining");
            return st == Status::ok;
        }, py::arg("timeout") = py::none())
        .def("close", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            q.close();
        })
        .def("unlink", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            q.unlink();
        })
        .def("detach", &sage::ShmQueue::detach, py::call_guard<py::gil_scoped_release>())
        .def("before_fork", [](sage::ShmQueue& q) { gil_held([&] { q.before_fork(); }); })
        .def("after_fork_in_parent", [](sage::ShmQueue& q) { q.after_fork_in_parent(); })
        .def("after_fork_in_child", [](sage::ShmQueue& q) { gil_held([&] { q.after_fork_in_child(); }); })
        .def("info", [](sage::ShmQueue& q) {
            sage::ShmQueue::InUse in_use(q);
            return info_dict(gil_held([&] { return q.info(); }));
        });
}
