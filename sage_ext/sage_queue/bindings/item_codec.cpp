// Wire format, little-endian: one type byte, then
//   'N' None  'T' True  'F' False
//   'i' int64          'd' float64 (bit pattern, so -0.0 and NaN payloads survive)
//   's' u32 n, n bytes of UTF-8        'b' u32 n, n bytes
//   'l' list / 't' tuple: u32 n, n items      'D' dict: u32 n, n (key, value) pairs
// Encoding runs no Python code (no __hash__, __eq__ or __reduce__), so the tree cannot
// change under it. Decoding trusts nothing: every length is checked against what is left.
#include "item_codec.h"

#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "shm_queue.h"

namespace sage::codec {
namespace {

enum Type : uint8_t {
    kNone = 'N', kTrue = 'T', kFalse = 'F', kInt = 'i', kFloat = 'd',
    kStr = 's', kBytes = 'b', kList = 'l', kTuple = 't', kDict = 'D',
};
constexpr size_t kMaxContainers = 1024;  // more go to pickle
constexpr size_t kLinearContainers = 16;  // up to here a container is found again by a scan

// Containers already visited by the encoding under way, once there are more than a scan
// finds quickly (a batch of dicts, say). One per thread: an encoding runs no Python code,
// so none nests in another.
class SeenTable {
public:
    bool insert(PyObject* p) {  // false if it was there already
        size_t h = size_t((uint64_t(reinterpret_cast<uintptr_t>(p)) >> 4) * 0x9E3779B97F4A7C15ULL >> (64 - kBits));
        while (slot_[h]) {
            if (slot_[h] == p) return false;
            h = (h + 1) & (kSlots - 1);
        }
        slot_[h] = p;
        used_[n_++] = uint16_t(h);
        return true;
    }
    void clear() {  // only the slots this encoding took
        for (size_t i = 0; i < n_; ++i) slot_[used_[i]] = nullptr;
        n_ = 0;
    }

private:
    static constexpr int kBits = 12;
    static constexpr size_t kSlots = size_t(1) << kBits;  // 4x kMaxContainers: short probes
    PyObject* slot_[kSlots] = {};
    uint16_t used_[kMaxContainers];
    size_t n_ = 0;
};
thread_local SeenTable seen_table;

// Writes through a raw pointer into room reserved for the largest encoding: one bounds
// check per write, no allocation.
class Encoder {
public:
    explicit Encoder(ByteBuffer& out) : out_(out), start_(out.size()) {
        out.reserve(start_ + kMaxEncoded);
        at_ = out.data() + start_;
        end_ = at_ + kMaxEncoded;
    }
    ~Encoder() {
        if (containers_ > kLinearContainers) seen_table.clear();
    }
    Encoder(const Encoder&) = delete;
    Encoder& operator=(const Encoder&) = delete;

    bool item(PyObject* obj, int depth) {
        if (obj == Py_None) return put(kNone);
        if (obj == Py_True) return put(kTrue);
        if (obj == Py_False) return put(kFalse);
        PyTypeObject* type = Py_TYPE(obj);
        if (type == &PyLong_Type) {
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
            return !overflow && put(kInt, &v, 8);
        }
        if (type == &PyFloat_Type) {
            double v = PyFloat_AS_DOUBLE(obj);
            return put(kFloat, &v, 8);
        }
        if (type == &PyUnicode_Type) {
            Py_ssize_t n;
            const char* s = PyUnicode_AsUTF8AndSize(obj, &n);
            if (!s) {  // lone surrogates: pickle has a way, UTF-8 has not
                PyErr_Clear();
                return false;
            }
            return put_sized(kStr, size_t(n)) && put(s, size_t(n));
        }
        if (type == &PyBytes_Type) {
            size_t n = size_t(PyBytes_GET_SIZE(obj));
            return put_sized(kBytes, n) && put(PyBytes_AS_STRING(obj), n);
        }
        if (type != &PyList_Type && type != &PyTuple_Type && type != &PyDict_Type) return false;
        if (depth >= kMaxDepth || !first_visit(obj)) return false;
        if (type == &PyDict_Type) {
            if (!put_sized(kDict, size_t(PyDict_GET_SIZE(obj)))) return false;
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(obj, &pos, &key, &value))
                if (!item(key, depth + 1) || !item(value, depth + 1)) return false;
            return true;
        }
        const bool list = type == &PyList_Type;
        Py_ssize_t n = list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj);
        if (!put_sized(list ? kList : kTuple, size_t(n))) return false;
        PyObject** items = PySequence_Fast_ITEMS(obj);  // a list's or a tuple's item array
        for (Py_ssize_t i = 0; i < n; ++i)
            if (!item(items[i], depth + 1)) return false;
        return true;
    }

    void commit() { out_.resize(size_t(at_ - out_.data())); }

private:
    bool put(uint8_t type) {
        if (at_ == end_) return false;
        *at_++ = type;
        return true;
    }
    bool put(const void* p, size_t n) {
        if (size_t(end_ - at_) < n) return false;
        memcpy(at_, p, n);
        at_ += n;
        return true;
    }
    bool put(uint8_t type, const void* p, size_t n) { return put(type) && put(p, n); }
    bool put_sized(uint8_t type, size_t n) {
        if (n > kMaxEncoded) return false;
        uint32_t v = uint32_t(n);
        return put(type, &v, 4);
    }
    // Pickle gives a container reached twice back as one object (and handles cycles);
    // a tree encoding would give copies, so such items go to pickle.
    bool first_visit(PyObject* container) {
        if (containers_ == kMaxContainers) return false;
        if (containers_ < kLinearContainers) {
            for (size_t i = 0; i < containers_; ++i)
                if (seen_[i] == container) return false;
            seen_[containers_++] = container;
            return true;
        }
        if (containers_ == kLinearContainers)  // past a scan's length: into the table
            for (size_t i = 0; i < kLinearContainers; ++i) seen_table.insert(seen_[i]);
        if (!seen_table.insert(container)) {
            ++containers_;  // so the destructor clears the table
            return false;
        }
        ++containers_;
        return true;
    }

    ByteBuffer& out_;
    size_t start_;
    uint8_t* at_;
    uint8_t* end_;
    PyObject* seen_[kLinearContainers];
    size_t containers_ = 0;
};

// Dict keys repeat from item to item: a decoded ASCII key is kept here (one slot per hash
// of its bytes) and handed out again, which saves building and hashing the same str.
// Guarded by the GIL, like every call of the decoder.
class KeyCache {
public:
    PyObject* get(const char* s, size_t n) {
        if (n > kMaxKey) return nullptr;
        uint32_t h = 2166136261u;  // FNV-1a
        for (size_t i = 0; i < n; ++i) h = (h ^ uint8_t(s[i])) * 16777619u;
        PyObject*& slot = slots_[h % kSlots];
        if (slot && size_t(PyUnicode_GET_LENGTH(slot)) == n && memcmp(PyUnicode_DATA(slot), s, n) == 0) {
            Py_INCREF(slot);
            return slot;
        }
        for (size_t i = 0; i < n; ++i)
            if (uint8_t(s[i]) >= 0x80) return nullptr;  // only ASCII: its str data is its UTF-8
        PyObject* str = PyUnicode_FromStringAndSize(s, Py_ssize_t(n));
        if (!str) throw pybind11::error_already_set();
        if (PyObject_Hash(str) == -1) PyErr_Clear();  // a str's hash cannot fail; computed once here
        Py_XSETREF(slot, Py_NewRef(str));
        return str;
    }

private:
    static constexpr size_t kMaxKey = 32;
    static constexpr size_t kSlots = 512;
    PyObject* slots_[kSlots] = {};
} key_cache;

[[noreturn]] void corrupt(const std::string& what) {
    throw sage::CorruptSegment("corrupt item in a record: " + what);
}

class Decoder {
public:
    Decoder(const uint8_t* p, size_t len) : p_(p), end_(p + len) {}

    pybind11::object item(int depth, bool key = false) {
        uint8_t type = byte();
        switch (type) {
            case kNone: return pybind11::none();
            case kTrue: return pybind11::bool_(true);
            case kFalse: return pybind11::bool_(false);
            case kInt: {
                long long v;
                copy(&v, 8);
                return steal(PyLong_FromLongLong(v));
            }
            case kFloat: {
                double v;
                copy(&v, 8);
                return steal(PyFloat_FromDouble(v));
            }
            case kStr: {
                size_t n = length(1);
                const char* s = reinterpret_cast<const char*>(take(n));
                if (key)
                    if (PyObject* cached = key_cache.get(s, n)) return steal(cached);
                PyObject* str = PyUnicode_DecodeUTF8(s, Py_ssize_t(n), "strict");
                if (!str) {
                    PyErr_Clear();
                    corrupt("a str that is not UTF-8");
                }
                return steal(str);
            }
            case kBytes: {
                size_t n = length(1);
                return steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(take(n)), Py_ssize_t(n)));
            }
            case kList:
            case kTuple: {
                if (depth >= kMaxDepth) corrupt("nested deeper than " + std::to_string(kMaxDepth));
                size_t n = length(1);  // every item takes at least its type byte
                const bool list = type == kList;
                pybind11::object seq = steal(list ? PyList_New(Py_ssize_t(n)) : PyTuple_New(Py_ssize_t(n)));
                for (size_t i = 0; i < n; ++i) {  // an unfilled slot is NULL, which dealloc skips
                    PyObject* v = item(depth + 1).release().ptr();
                    if (list)
                        PyList_SET_ITEM(seq.ptr(), Py_ssize_t(i), v);
                    else
                        PyTuple_SET_ITEM(seq.ptr(), Py_ssize_t(i), v);
                }
                return seq;
            }
            case kDict: {
                if (depth >= kMaxDepth) corrupt("nested deeper than " + std::to_string(kMaxDepth));
                size_t n = length(2);
                pybind11::object dict = steal(PyDict_New());
                for (size_t i = 0; i < n; ++i) {
                    pybind11::object key = item(depth + 1, true);
                    pybind11::object value = item(depth + 1);
                    if (PyDict_SetItem(dict.ptr(), key.ptr(), value.ptr()) != 0) {
                        PyErr_Clear();  // an unhashable key: no encoder writes one
                        corrupt("a dict key that cannot be hashed");
                    }
                }
                return dict;
            }
            default:
                corrupt("unknown type byte " + std::to_string(type));
        }
    }

    void finish() const {
        if (p_ != end_) corrupt(std::to_string(end_ - p_) + " bytes after the item");
    }

private:
    static pybind11::object steal(PyObject* obj) {
        if (!obj) throw pybind11::error_already_set();
        return pybind11::reinterpret_steal<pybind11::object>(obj);
    }
    const uint8_t* take(size_t n) {
        if (size_t(end_ - p_) < n) corrupt("it ends early");
        const uint8_t* at = p_;
        p_ += n;
        return at;
    }
    uint8_t byte() { return *take(1); }
    void copy(void* dst, size_t n) { memcpy(dst, take(n), n); }
    // A count or length, checked against the bytes left (each element needs `min_bytes`).
    size_t length(size_t min_bytes) {
        uint32_t n;
        copy(&n, 4);
        if (uint64_t(n) * min_bytes > uint64_t(end_ - p_)) corrupt("a length beyond its end");
        return n;
    }

    const uint8_t* p_;
    const uint8_t* end_;
};

}  // namespace

bool encode(PyObject* item, ByteBuffer& out) {
    Encoder e(out);
    if (!e.item(item, 0)) return false;  // `out` keeps its size: the bytes written are dropped
    e.commit();
    return true;
}

PyObject* decode(const uint8_t* data, size_t len) {
    Decoder d(data, len);
    pybind11::object obj = d.item(0);
    d.finish();
    return obj.release().ptr();
}

}  // namespace sage::codec
