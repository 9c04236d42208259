// The item codec: a compact encoding for the items pipelines send most, small trees of
// None, bool, int (64-bit), float, str, bytes, list, tuple and dict. Encoding walks the
// tree once and decoding builds the objects directly, which costs a fraction of
// pickle.dumps/pickle.loads for a small dict. Anything the codec cannot reproduce exactly
// is left to pickle, so what a consumer gets is what pickle would have given it.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sage::codec {

constexpr size_t kMaxEncoded = 16 * 1024;  // larger items go to pickle (out-of-band buffers)
constexpr int kMaxDepth = 16;              // nesting levels

// Appends the encoding of `item` to `out` and returns true; or returns false, with `out`
// as it was and no Python error set, when the item needs pickle: a type outside the list
// or a subclass of one, a list/tuple/dict reached twice (pickle keeps shared references
// and cycles), nesting deeper than kMaxDepth, an int beyond 64 bits, a str that is not
// valid UTF-8 (lone surrogates), or an encoding over kMaxEncoded bytes.
bool encode(PyObject* item, std::vector<uint8_t>& out);

// A new reference to the decoded item. Malformed data throws sage::CorruptSegment; a
// failing allocation throws pybind11::error_already_set.
PyObject* decode(const uint8_t* data, size_t len);

}  // namespace sage::codec
