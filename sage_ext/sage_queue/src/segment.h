// A queue's segment as this process holds it: created or attached, checked, mapped. The
// only unit besides the layout that knows what a header holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "process_identity.h"
#include "ring.h"
#include "segment_file.h"
#include "segment_layout.h"

namespace sage {

// The mapping and the geometry, read once from the header at attach and checked: the
// header's copy is never trusted again (anything may write it after we checked).
struct AttachedSegment {
    Segment* seg = nullptr;
    size_t map_size = 0;
    uint64_t cap = 0;
    uint64_t maxsize = 0;
    bool persistent = false;
    uint8_t* ring_bytes = nullptr;

    Ring ring() const { return {ring_bytes, cap}; }
    void unmap();  // idempotent
};

// A new segment in the exclusively created file `fd` (at shm name `path`, file `file`):
// sized, reserved, initialised, with slot 0 taken by `me` before it is marked ready, so no
// opener ever sees it without a user. On failure the file is removed.
AttachedSegment create_segment(int fd, const std::string& queue, const std::string& path, const FileId& file,
                               uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                               const ProcessIdentity& me);

// A segment its creator never finished: the creator is gone (it no longer holds the file's
// lock) and the file is older than an opener waits. Its name may be removed and reused.
struct AbandonedSegment : CorruptSegment {
    using CorruptSegment::CorruptSegment;
};

// Maps an existing segment: waits for its creator to finish (AbandonedSegment if it died), checks the header on a
// header-only mapping (no page of a file that fails is ever touched), then maps the whole
// file, populated. Throws with nothing left mapped. capacity_bytes/maxsize of 0 accept the
// segment's own.
AttachedSegment attach_segment(int fd, uint64_t file_size, const std::string& queue, uint64_t capacity_bytes,
                               uint64_t maxsize);

[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace sage
