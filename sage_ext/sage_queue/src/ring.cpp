// The ring's operations (ring.h). They run inside a locked section, on its private copy
// of the counters; the records they touch are in shared memory, so each header is read
// once and checked before it is followed.
#include "ring.h"

#include <cstring>
#include <time.h>

namespace sage {

uint64_t payload_size(const Message& m) {
    uint64_t len = m.nparts > 1 ? 8ULL * m.nparts : 0;
    for (uint16_t k = 0; k < m.nparts; ++k) len += m.parts[k].len;
    return len;
}

// The coarse clock's few milliseconds of resolution are plenty for the age of a hold
// (kLivenessAgeNs, 20 ms), and it costs a fraction of a precise read, which every put and
// get would otherwise pay.
uint64_t stamp_now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

const char* counters_problem(const Counters& c, uint64_t cap) {
    if (!(c.head <= c.read && c.read <= c.tail)) return "its ring positions are out of order";
    if (c.tail >= kMaxOffset) return "its ring positions are out of range";
    if (c.tail - c.head > cap) return "its ring holds more bytes than it has";
    if (c.head % kRecordHeader || c.read % kRecordHeader || c.tail % kRecordHeader)
        return "its ring positions are misaligned";
    if (c.items > (c.tail - c.read) / kRecordHeader) return "its item count exceeds its records";
    return nullptr;
}

RecordFacts read_record(const Ring& ring, uint64_t offset, uint64_t limit) {
    const RecordHeader* r = ring.record(offset);
    RecordFacts f{r->state.load(std::memory_order_acquire), __atomic_load_n(&r->len, __ATOMIC_RELAXED), 0, false};
    if (f.len <= ring.cap) {
        f.size = record_size(f.len);
        f.fits = offset % ring.cap + f.size <= ring.cap && f.size <= limit - offset;
    }
    return f;
}

bool HolderCheck::old_and_dead(const RecordHeader* r, uint64_t now) const {
    const int32_t holder = r->holder;
    const uint32_t start = r->holder_start;
    return now - r->stamp_ns >= kLivenessAgeNs && dead(context, holder, start);
}

bool reserve(const Ring& ring, Counters& c, uint64_t& shared_head, const Message* msgs, const uint64_t* sizes,
             size_t n, Holder me, uint64_t* offsets) {
    const uint64_t cap = ring.cap;
    if (c.head == c.tail && c.tail % cap) {
        // Empty ring: restart at a ring boundary so a batch that fits never needs padding.
        c.head = c.read = c.tail = round_up(c.tail, cap);
        shared_head = c.head;
    }
    uint64_t p = c.tail;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t size = record_size(sizes[i]);
        if (p % cap + size > cap) p += cap - p % cap;
        offsets[i] = p;
        p += size;
    }
    if (p - c.head > cap) return false;
    uint64_t q = c.tail;
    const uint64_t stamp = stamp_now_ns();
    for (size_t i = 0; i < n; ++i) {
        if (offsets[i] != q) {  // padding up to the ring's end
            RecordHeader* pad = ring.record(q);
            pad->len = offsets[i] - q - kRecordHeader;
            pad->holder = me.pid;
            pad->holder_start = me.start32;
            pad->state.store(kPad, std::memory_order_relaxed);
        }
        RecordHeader* r = ring.record(offsets[i]);
        r->tag = msgs[i].tag;
        r->nparts = msgs[i].nparts;
        r->holder = me.pid;
        r->holder_start = me.start32;
        r->len = sizes[i];
        r->stamp_ns = stamp;
        r->state.store(kReserved, std::memory_order_relaxed);
        q = offsets[i] + record_size(sizes[i]);
    }
    c.tail = p;
    c.items += n;
    c.unfinished += n;
    return true;
}

void copy_payload(const Ring& ring, uint64_t offset, const Message& m) {
    uint8_t* dst = ring.payload(offset);
    if (m.nparts > 1) {
        for (uint16_t k = 0; k < m.nparts; ++k) {
            const uint64_t len = m.parts[k].len;
            memcpy(dst, &len, 8);
            dst += 8;
        }
    }
    for (uint16_t k = 0; k < m.nparts; ++k) {
        if (m.parts[k].len) memcpy(dst, m.parts[k].data, m.parts[k].len);
        dst += m.parts[k].len;
    }
}

void commit(const Ring& ring, uint64_t offset) { ring.record(offset)->state.store(kCommitted, std::memory_order_release); }

void free_record(const Ring& ring, uint64_t offset) { ring.record(offset)->state.store(kFree, std::memory_order_release); }

bool reclaim_space(const Ring& ring, Counters& c, uint64_t& shared_head, HolderCheck check, RingFault& fault) {
    const uint64_t t = stamp_now_ns();
    bool moved = false;
    while (c.head < c.read) {
        RecordHeader* r = ring.record(c.head);
        const RecordFacts f = read_record(ring, c.head, c.read);
        if (!f.fits) {
            fault = {RingFault::bad_record, c.head, f.state};
            return moved;
        }
        if (f.state == kClaimed) {
            if (!check.old_and_dead(r, t)) break;
            r->state.store(kFree);  // its consumer died while copying it out
            c.stats.reclaimed_records++;
        } else if (f.state != kFree && f.state != kPad && f.state != kAbandoned) {
            fault = {RingFault::bad_state, c.head, f.state};
            return moved;
        }
        c.head += f.size;
        shared_head = c.head;
        moved = true;
    }
    return moved;
}

ClaimWalk claim_records(const Ring& ring, Counters& c, size_t max_items, uint64_t max_bytes, Holder me,
                        HolderCheck check, std::vector<RecordView>& out) {
    ClaimWalk walk;
    uint64_t t = 0;
    while (out.size() < max_items && c.read < c.tail) {
        RecordHeader* r = ring.record(c.read);
        const RecordFacts f = read_record(ring, c.read, c.tail);
        if (!f.fits) {
            walk.corrupt = true;
            break;
        }
        if (f.state == kPad) {
            c.read += f.size;
        } else if (f.state == kReserved) {
            if (!t) t = stamp_now_ns();
            if (!check.old_and_dead(r, t)) break;
            r->state.store(kAbandoned);  // its producer died before committing it
            c.read += f.size;
            if (c.items) c.items--;
            if (c.unfinished) c.unfinished--;
            c.stats.abandoned_records++;
        } else if (f.state == kCommitted) {
            if (!out.empty() && walk.bytes + f.len > max_bytes) break;
            if (!t) t = stamp_now_ns();
            const uint8_t tag = r->tag;
            const uint16_t nparts = r->nparts;
            r->holder = me.pid;
            r->holder_start = me.start32;
            r->stamp_ns = t;
            r->state.store(kClaimed, std::memory_order_relaxed);
            out.push_back({c.read, tag, nparts, ring.payload(c.read), f.len});
            c.read += f.size;
            if (c.items) c.items--;
            walk.bytes += f.len;
        } else {
            walk.corrupt = true;
            break;
        }
    }
    if (!out.empty()) {
        c.stats.gets += out.size();
        c.stats.bytes_got += walk.bytes;
    }
    return walk;
}

void undo_claims(const Ring& ring, uint64_t read, uint64_t tail) {
    for (uint64_t off = read; off < tail;) {  // at most one ring
        const RecordFacts f = read_record(ring, off, tail);
        if (!f.fits) break;  // corrupt: stop here, claim() will report it
        RecordHeader* r = ring.record(off);
        if (f.state == kClaimed) r->state.store(kCommitted);
        else if (f.state == kAbandoned) r->state.store(kReserved);
        off += f.size;
    }
}

}  // namespace sage
