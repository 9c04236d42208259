// Segments: names, creation, attach with its checks, and the layout's offsets.
#include "segment.h"

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace sage {

namespace {

// The character of `text` that starts at byte `at`, as a user would name it: 'é' (U+00E9),
// a control character by its code, a byte that starts no UTF-8 character by its value.
std::string describe_character(const std::string& text, size_t at) {
    const unsigned char lead = text[at];
    char buf[40];
    if (lead >= 0x20 && lead < 0x7f) {
        snprintf(buf, sizeof buf, "'%c'", lead);
        return buf;
    }
    if (lead < 0x80) {
        snprintf(buf, sizeof buf, "control character 0x%02x", unsigned(lead));
        return buf;
    }
    const size_t extra = lead >= 0xf0 && lead < 0xf5 ? 3 : lead >= 0xe0 && lead < 0xf0 ? 2 : lead >= 0xc2 && lead < 0xe0 ? 1 : 0;
    uint32_t cp = lead & (0x3f >> extra);
    bool valid = extra > 0 && at + extra < text.size();
    for (size_t k = 1; valid && k <= extra; ++k) {
        const unsigned char cont = text[at + k];
        valid = (cont & 0xc0) == 0x80;
        cp = (cp << 6) | (cont & 0x3f);
    }
    if (!valid) {
        snprintf(buf, sizeof buf, "byte 0x%02x (not UTF-8)", unsigned(lead));
        return buf;
    }
    snprintf(buf, sizeof buf, " (U+%04X)", unsigned(cp));
    return "'" + text.substr(at, extra + 1) + "'" + buf;
}

}  // namespace

void throw_errno(const std::string& what, int err) { throw SystemError(what + ": " + strerror(err), err); }

std::string ShmQueue::segment_path(const std::string& name) { return std::string("/") + kSegmentPrefix + name; }

void ShmQueue::validate_name(const std::string& name) {
    if (name.empty()) throw InvalidArgument("queue name must not be empty");
    if (name.size() > kMaxNameLength)
        throw InvalidArgument("queue name is " + std::to_string(name.size()) + " characters long; the limit is " +
                              std::to_string(kMaxNameLength));
    for (size_t i = 0; i < name.size(); ++i) {
        const unsigned char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                  ch == '-' || ch == '.';
        if (!ok) {
            throw InvalidArgument("queue name contains " + describe_character(name, i) +
                                  "; use only letters, digits, '_', '-' and '.'");
        }
    }
    if (name.find("..") != std::string::npos || name == ".")
        throw InvalidArgument("queue name must not be '.' or contain '..'");
}

void AttachedSegment::unmap() {
    if (seg) munmap(seg, map_size);
    seg = nullptr;
    ring_bytes = nullptr;
}

AttachedSegment create_segment(int fd, const std::string& queue, const std::string& path, const FileId& file,
                               uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                               const ProcessIdentity& me) {
    const uint64_t cap = round_up(capacity_bytes ? capacity_bytes : kDefaultCapacity, kPage);
    const uint64_t total = ring_offset() + cap;
    int rc = ftruncate(fd, off_t(total)) == 0 ? 0 : errno;
    // Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later.
    if (rc == 0) rc = posix_fallocate(fd, 0, off_t(total));
    if (rc != 0) {
        unlink_if_same_file(path, file);
        if (rc == ENOSPC)
            throw SystemError("not enough room in /dev/shm for queue '" + queue + "' (" + std::to_string(total) +
                              " bytes); free space there, pass a smaller capacity_bytes, or give the container "
                              "more (docker run --shm-size=256m)", rc);
        throw_errno("cannot size queue '" + queue + "'", rc);
    }
    Mapping mapping;
    try {
        mapping = Mapping(fd, total, true, true);
    } catch (...) {
        unlink_if_same_file(path, file);
        throw;
    }
    AttachedSegment a;
    a.seg = static_cast<Segment*>(mapping.release());
    a.map_size = total;
    a.cap = cap;
    a.maxsize = maxsize;
    a.persistent = persistent;
    a.ring_bytes = reinterpret_cast<uint8_t*>(a.seg) + ring_offset();
    Segment* s = a.seg;
    s->magic = kMagic;
    s->version = kLayoutVersion;
    s->header_bytes = sizeof(Segment);
    s->capacity = cap;
    s->maxsize = maxsize;
    s->ring_offset = ring_offset();
    s->total_bytes = total;
    s->persistent = persistent ? 1 : 0;
    s->creator_pid = me.pid;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    Slot& mine = s->slots[0];
    mine.flags = 0;
    mine.start = me.start;
    mine.pidns = me.pidns;
    mine.outstanding = 0;
    mine.pid.store(me.pid);
    s->ready.store(1, std::memory_order_release);
    return a;
}

namespace {

// Whether the creator of an unready segment is gone: nobody holds the lock it takes at
// creation, and the file is older than an opener waits, or we waited that long (a creator
// takes the lock right after creating the file: a young file with the lock free may be
// mid-creation).
bool creator_gone(int fd, bool waited_out) {
    struct stat st{};
    timespec now{};
    if (fstat(fd, &st) != 0 || clock_gettime(CLOCK_REALTIME, &now) != 0) return false;
    const double age = double(now.tv_sec - st.st_ctim.tv_sec) + double(now.tv_nsec - st.st_ctim.tv_nsec) * 1e-9;
    if ((age < kInitWaitSeconds && !waited_out) || flock(fd, LOCK_SH | LOCK_NB) != 0) return false;
    flock(fd, LOCK_UN);
    return true;
}

}  // namespace

AttachedSegment attach_segment(int fd, uint64_t file_size, const std::string& queue, uint64_t capacity_bytes,
                               uint64_t maxsize) {
    const uint64_t header_size = ring_offset();
    const double give_up = monotonic_seconds() + kInitWaitSeconds;
    Mapping header;
    for (;;) {
        // A creator sizes the file in one step: a size between 0 and a minimal queue is not one.
        if (file_size > 0 && file_size < header_size + kMinCapacity)
            throw CorruptSegment("cannot attach to queue '" + queue + "': its file is only " +
                                 std::to_string(file_size) + " bytes, too small to be a sage_queue" + kCleanup);
        if (file_size > 0) {
            header = Mapping(fd, header_size, false, false);
            const Segment* h = static_cast<const Segment*>(header.get());
            const bool ready = h->ready.load(std::memory_order_acquire) == 1;
            // A creator's freshly sized file is all zeros: other bytes mean it is not ours.
            const bool foreign = __atomic_load_n(&h->magic, __ATOMIC_RELAXED) != 0 &&
                                 __atomic_load_n(&h->magic, __ATOMIC_RELAXED) != kMagic;
            if (ready || foreign) break;
            header = Mapping();
        }
        const bool waited_out = monotonic_seconds() > give_up;
        if (creator_gone(fd, waited_out))
            throw AbandonedSegment("queue '" + queue + "' was left unfinished by a creator that died while creating it");
        if (waited_out)
            throw CorruptSegment("queue '" + queue + "' was never initialised (its creator may have died while "
                                 "creating it)" + kCleanup);
        usleep(1000);  // only while another process is creating the segment
        struct stat st{};
        if (fstat(fd, &st) != 0) throw_errno("cannot stat queue '" + queue + "'", errno);
        file_size = uint64_t(st.st_size);
    }
    // Each field read once, into the locals that are kept.
    const Segment* h = static_cast<const Segment*>(header.get());
    const uint64_t magic = h->magic, capacity = h->capacity, max_items = h->maxsize;
    const uint64_t offset = h->ring_offset, total = h->total_bytes;
    const uint32_t version = h->version, header_bytes = h->header_bytes, persistent = h->persistent;
    std::string problem;
    if (magic != kMagic) problem = "it is not a sage_queue segment (bad magic)";
    else if (version != kLayoutVersion)
        problem = "its layout version is " + std::to_string(version) + ", this build reads " +
                  std::to_string(kLayoutVersion);
    else if (header_bytes != sizeof(Segment) || offset != header_size)
        problem = "its header size does not match this build";
    else if (capacity < kMinCapacity || capacity > kMaxCapacity || capacity % kPage || total != offset + capacity ||
             total != file_size)
        problem = "its sizes are inconsistent (capacity " + std::to_string(capacity) + ", file " +
                  std::to_string(file_size) + " bytes)";
    else if (max_items > kMaxMaxsize) problem = "its maxsize is out of range";
    if (!problem.empty()) throw CorruptSegment("cannot attach to queue '" + queue + "': " + problem + kCleanup);
    if (capacity_bytes && round_up(capacity_bytes, kPage) != capacity)
        throw InvalidArgument("queue '" + queue + "' exists with capacity_bytes=" + std::to_string(capacity) +
                              ", not " + std::to_string(capacity_bytes) +
                              "; open it without capacity_bytes or use another name");
    if (maxsize && maxsize != max_items)
        throw InvalidArgument("queue '" + queue + "' exists with maxsize=" + std::to_string(max_items) + ", not " +
                              std::to_string(maxsize) + "; open it without maxsize or use another name");
    Mapping whole(fd, total, true, true);
    AttachedSegment a;
    a.seg = static_cast<Segment*>(whole.release());
    a.map_size = total;
    a.cap = capacity;
    a.maxsize = max_items;
    a.persistent = persistent != 0;
    a.ring_bytes = reinterpret_cast<uint8_t*>(a.seg) + offset;
    return a;
}

std::vector<std::pair<std::string, size_t>> layout_offsets() {
#define SAGE_FIELD(prefix, type, field) {prefix #field, offsetof(type, field)}
#define SAGE_WORD(name, word, part) {"segment." name, offsetof(Segment, word) + offsetof(FutexWord, part)}
    return {
        SAGE_FIELD("segment.", Segment, magic), SAGE_FIELD("segment.", Segment, version),
        SAGE_FIELD("segment.", Segment, header_bytes), SAGE_FIELD("segment.", Segment, capacity),
        SAGE_FIELD("segment.", Segment, maxsize), SAGE_FIELD("segment.", Segment, ring_offset),
        SAGE_FIELD("segment.", Segment, total_bytes), SAGE_FIELD("segment.", Segment, persistent),
        SAGE_FIELD("segment.", Segment, creator_pid), SAGE_FIELD("segment.", Segment, ready),
        SAGE_FIELD("segment.", Segment, closed), SAGE_FIELD("segment.", Segment, unlinked),
        SAGE_FIELD("segment.", Segment, mutex), SAGE_FIELD("segment.", Segment, c),
        SAGE_FIELD("segment.", Segment, journal),
        SAGE_WORD("not_empty_seq", not_empty, seq), SAGE_WORD("not_empty_sleepers", not_empty, sleepers),
        SAGE_WORD("not_full_seq", not_full, seq), SAGE_WORD("not_full_sleepers", not_full, sleepers),
        SAGE_WORD("join_seq", join_done, seq), SAGE_WORD("join_sleepers", join_done, sleepers),
        SAGE_FIELD("segment.", Segment, slots),
        {"segment.size", sizeof(Segment)}, {"segment.ring", ring_offset()},
        SAGE_FIELD("counters.", Counters, head), SAGE_FIELD("counters.", Counters, read),
        SAGE_FIELD("counters.", Counters, tail), SAGE_FIELD("counters.", Counters, items),
        SAGE_FIELD("counters.", Counters, unfinished), SAGE_FIELD("counters.", Counters, stats),
        {"counters.size", sizeof(Counters)},
        SAGE_FIELD("journal.", Journal, active), SAGE_FIELD("journal.", Journal, slot_index),
        SAGE_FIELD("journal.", Journal, saved), SAGE_FIELD("journal.", Journal, saved_slot),
        {"journal.size", sizeof(Journal)},
        SAGE_FIELD("slot.", Slot, pid), SAGE_FIELD("slot.", Slot, flags), SAGE_FIELD("slot.", Slot, start),
        SAGE_FIELD("slot.", Slot, pidns), SAGE_FIELD("slot.", Slot, outstanding), {"slot.size", sizeof(Slot)},
        {"slot.count", size_t(kMaxSlots)},
        SAGE_FIELD("record.", RecordHeader, state), SAGE_FIELD("record.", RecordHeader, tag),
        SAGE_FIELD("record.", RecordHeader, nparts), SAGE_FIELD("record.", RecordHeader, holder),
        SAGE_FIELD("record.", RecordHeader, holder_start), SAGE_FIELD("record.", RecordHeader, len),
        SAGE_FIELD("record.", RecordHeader, stamp_ns), {"record.size", sizeof(RecordHeader)},
        {"record.state.reserved", kReserved}, {"record.state.committed", kCommitted},
        {"record.state.claimed", kClaimed}, {"record.state.free", kFree}, {"record.state.pad", kPad},
        {"record.state.abandoned", kAbandoned}, SAGE_FIELD("record.", RecordHeader, unused0),
        SAGE_FIELD("stats.", Stats, puts), SAGE_FIELD("stats.", Stats, gets), SAGE_FIELD("stats.", Stats, bytes_put),
        SAGE_FIELD("stats.", Stats, bytes_got), SAGE_FIELD("stats.", Stats, abandoned_records),
        SAGE_FIELD("stats.", Stats, reclaimed_records), SAGE_FIELD("stats.", Stats, written_off_tasks),
        SAGE_FIELD("stats.", Stats, lock_recoveries), {"stats.size", sizeof(Stats)},
        SAGE_FIELD("slot_copy.", SlotCopy, pid), SAGE_FIELD("slot_copy.", SlotCopy, flags),
        SAGE_FIELD("slot_copy.", SlotCopy, start), SAGE_FIELD("slot_copy.", SlotCopy, pidns),
        SAGE_FIELD("slot_copy.", SlotCopy, outstanding), {"slot_copy.size", sizeof(SlotCopy)},
#if defined(__GLIBC__)
        // glibc's pthread_mutex_t, which the lock's checks read (lock_holder.h): offsets
        // within segment.mutex.
        {"mutex.lock", offsetof(pthread_mutex_t, __data.__lock)},
        {"mutex.count", offsetof(pthread_mutex_t, __data.__count)},
        {"mutex.owner", offsetof(pthread_mutex_t, __data.__owner)},
        {"mutex.nusers", offsetof(pthread_mutex_t, __data.__nusers)},
        {"mutex.kind", offsetof(pthread_mutex_t, __data.__kind)},
        {"mutex.spins", offsetof(pthread_mutex_t, __data.__kind) + sizeof(int)},
        {"mutex.list", offsetof(pthread_mutex_t, __data.__list)},
        {"mutex.size", sizeof(pthread_mutex_t)},
        {"mutex.lock.tid_mask", FUTEX_TID_MASK},  // the owner's tid in the lock word; the other bits are flags
#endif
    };
#undef SAGE_WORD
#undef SAGE_FIELD
}

}  // namespace sage
