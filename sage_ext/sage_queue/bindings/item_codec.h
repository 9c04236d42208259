// The item codec: a compact encoding for the items pipelines send most, small trees of
// None, bool, int (64-bit), float, str, bytes, list, tuple and dict. Encoding walks the
// tree once and decoding builds the objects directly, which costs a fraction of
// pickle.dumps/pickle.loads for a small dict. Anything the codec cannot reproduce exactly
// is left to pickle, so what a consumer gets is what pickle would have given it.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace sage::codec {

constexpr size_t kMaxEncoded = 16 * 1024;  // larger items go to pickle (out-of-band buffers)
constexpr int kMaxDepth = 16;              // nesting levels

// A growable byte buffer that, unlike std::vector, does not zero what it hands out.
class ByteBuffer {
public:
    uint8_t* data() { return data_.get(); }
    size_t size() const { return size_; }
    size_t capacity() const { return capacity_; }
    void clear() { size_ = 0; }
    void resize(size_t n) { reserve(n), size_ = n; }  // new bytes are left as they are
    void reserve(size_t n) {
        if (n <= capacity_) return;
        size_t cap = capacity_ ? capacity_ : 1024;
        while (cap < n) cap *= 2;
        std::unique_ptr<uint8_t[]> grown(new uint8_t[cap]);
        if (size_) memcpy(grown.get(), data_.get(), size_);
        data_ = std::move(grown);
        capacity_ = cap;
    }

private:
    std::unique_ptr<uint8_t[]> data_;
    size_t size_ = 0, capacity_ = 0;
};

// Appends the encoding of `item` to `out` and returns true; or returns false, with `out`
// as it was and no Python error set, when the item needs pickle: a type outside the list
// or a subclass of one, a list/tuple/dict reached twice (pickle keeps shared references
// and cycles), nesting deeper than kMaxDepth, an int beyond 64 bits, a str that is not
// valid UTF-8 (lone surrogates), more than 1024 lists/tuples/dicts, or an encoding over
// kMaxEncoded bytes.
bool encode(PyObject* item, ByteBuffer& out);

// A new reference to the decoded item. Malformed data throws sage::CorruptSegment; a
// failing allocation throws pybind11::error_already_set.
PyObject* decode(const uint8_t* data, size_t len);

}  // namespace sage::codec
