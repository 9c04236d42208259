// Marshalling between Python objects and the core's messages and records: the batch of
// buffers a put holds while the core copies them, the encoder that picks raw bytes, the
// item codec or pickle for each item, and the decoder that turns a claimed record back
// into an object.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "item_codec.h"
#include "shm_queue.h"

namespace sage::binding {

namespace py = pybind11;

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
};
extern Support support;

[[noreturn]] void raise(PyObject* type, const char* msg);

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
    std::vector<Part> parts;
    std::vector<Message> msgs;
    std::vector<size_t> first_part;
    codec::ByteBuffer encoded;  // the item codec's output, for every codec item of the batch
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
using Records = std::vector<RecordView>;

// In the caller: bytes-like items travel raw, small plain trees through the item codec,
// everything else as pickle protocol 5.
struct Encoder {
    PyObject* dumps = nullptr;
    PyObject* protocol = nullptr;
    PyObject* kwnames = nullptr;  // ("buffer_callback",)
    PyObject* oob = nullptr;      // reused list of out-of-band buffers
    PyObject* oob_append = nullptr;
    bool busy = false;            // a __reduce__ may put into another queue

    void add(Batch& b, PyObject* item);  // appends the item's message to `b`
};
extern Encoder encoder;


// Sets up pickle's entry points for the encoder and the decoder; once, at import.
void init_marshal();

// The object a claimed record holds. Throws CorruptSegment for a record that is malformed.
py::object decode(const RecordView& r);

// Frees claimed records even when decoding raises.
struct ReleaseGuard {
    ShmQueue& q;
    std::vector<RecordView>& records;
    ~ReleaseGuard() { q.release(records); }
};

// The stdlib's meaning: block=False never waits; timeout=None waits forever.
double to_timeout(bool block, py::handle timeout);
OpenMode parse_mode(const std::string& mode);
py::dict info_dict(const Info& in);

}  // namespace sage::binding
