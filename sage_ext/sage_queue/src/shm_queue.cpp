// The queue's calls (include/shm_queue.h), composed of its units: the lock with its
// journal (robust_lock.h), waiting (futex_word.h) and the ring (ring.h). The handle's life
// (open, slots, fork, detach) is in queue_handle.cpp.
//
// Shared memory is input: every value read from the segment after attach is read once
// into a local, checked, and only then used. A violation is CorruptSegment, with the
// section rolled back and the lock released, never a signal, a write outside the mapping
// or a wait without end.
#include "shm_queue.h"

#include <cerrno>
#include <cstring>
#include <unistd.h>
#include <utility>

#include "handle_state.h"
#include "segment_users.h"

namespace sage {

namespace {

constexpr uint64_t kLargeRecord = 64 * 1024;  // signal consumers before starting a copy this long

[[noreturn]] void throw_corrupt_record(const std::string& queue, uint64_t offset) {
    throw CorruptSegment("queue '" + queue + "' has a corrupt record at offset " + std::to_string(offset) + kCleanup);
}

}  // namespace

// ---------------------------------------------------------------- put and get

Status ShmQueue::put_many(const Message* msgs, size_t n, double timeout) {
    HandleState& s = *s_;
    Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    if (n == 0) return Status::ok;
    const Ring ring = s.segment.ring();
    const uint64_t cap = ring.cap, maxsize = s.segment.maxsize;
    // Per-thread scratch: a put must not allocate (no Python runs inside, so no reentry).
    thread_local std::vector<uint64_t> sizes, offsets;
    sizes.resize(n);
    offsets.resize(n);
    uint64_t total = 0, payload_total = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t len = payload_size(msgs[i]);
        sizes[i] = len;
        payload_total += len;
        total += len > cap ? cap + 1 : record_size(len);
        if (total > cap) break;  // too large already; no sum may overflow
    }
    if (total > cap)
        throw InvalidArgument((n == 1 ? "item of " : "batch of ") + std::to_string(payload_total) +
                              " bytes or more is larger than the ring of queue '" + s.name + "' (" +
                              std::to_string(cap) + " bytes); create it with a larger capacity_bytes");
    if (maxsize && n > maxsize)
        throw InvalidArgument("batch of " + std::to_string(n) + " items exceeds maxsize=" + std::to_string(maxsize) +
                              " of queue '" + s.name + "'");

    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        Status st = Status::timeout;
        {
            LockedSection section(s.lock, -1);
            seen = seg->not_full.current();
            Counters& c = section.counters();
            if (seg->closed.load()) {
                st = Status::closed;
            } else if (!maxsize || c.items + n <= maxsize) {
                for (int pass = 0; pass < 2 && st != Status::ok; ++pass) {
                    if (pass == 1) {
                        RingFault fault;
                        const bool moved = reclaim_space(ring, c, seg->c.head, holder_check(s), fault);
                        if (fault.kind == RingFault::bad_record) throw_corrupt_record(s.name, fault.offset);
                        if (fault.kind == RingFault::bad_state)
                            throw CorruptSegment("queue '" + s.name + "' has a record in state " +
                                                 std::to_string(fault.state) + " behind its read pointer" + kCleanup);
                        if (!moved) break;
                    }
                    if (reserve(ring, c, seg->c.head, msgs, sizes.data(), n, holder(s), offsets.data())) {
                        c.stats.puts += n;
                        c.stats.bytes_put += payload_total;
                        st = Status::ok;
                    }
                }
            }
        }
        if (st == Status::ok) break;
        if (detaching()) return Status::closed;
        if (st == Status::closed || timeout == 0) return st;
        // Wake now and then while blocked: the consumer holding the oldest record may die
        // without a word, and only a look at its pid tells.
        Status w = seg->not_full.wait(seen, deadline, true, s.spin_budget);
        if (w != Status::ok) return w;
    }

    // Copy outside the lock, then commit: a record is visible only once complete.
    for (size_t i = 0; i < n; ++i) {
        copy_payload(ring, offsets[i], msgs[i]);
        commit(ring, offsets[i]);
        // Publish what is committed before a long copy, in case we die during it.
        if (i + 1 == n || sizes[i + 1] >= kLargeRecord) seg->not_empty.signal();
    }
    return Status::ok;
}

Status ShmQueue::claim(size_t max_items, uint64_t max_bytes, double timeout, std::vector<RecordView>& out) {
    HandleState& s = *s_;
    Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    out.clear();
    if (max_items == 0) return Status::ok;
    const Ring ring = s.segment.ring();
    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        bool corrupt, drained;
        uint64_t at;
        {
            LockedSection section(s.lock, s.slot);
            seen = seg->not_empty.current();
            Counters& c = section.counters();
            corrupt = claim_records(ring, c, max_items, max_bytes, holder(s), holder_check(s), out).corrupt;
            if (!out.empty() && s.slot >= 0) seg->slots[s.slot].outstanding += out.size();
            drained = c.read == c.tail;
            at = c.read;
        }
        if (corrupt && out.empty()) throw_corrupt_record(s.name, at);
        if (!out.empty()) {
            // The ring changed under a blocked producer: let it look again (its maxsize room, or
            // a claimed record whose consumer may now die before freeing it).
            if (seg->not_full.waiting()) seg->not_full.signal();
            return Status::ok;
        }
        if ((drained && seg->closed.load()) || detaching()) return Status::closed;
        if (timeout == 0) return Status::timeout;
        // Blocked on a reserved record: wake now and then, its producer may die mid-copy.
        Status w = seg->not_empty.wait(seen, deadline, !drained, s.spin_budget);
        if (w != Status::ok) return w;
    }
}

void ShmQueue::release(const std::vector<RecordView>& records) {
    Segment* seg = s_->segment.seg;
    if (!seg || records.empty()) return;
    const Ring ring = s_->segment.ring();
    for (const RecordView& v : records) free_record(ring, v.offset);
    seg->not_full.signal();
}

// ---------------------------------------------------------------- tasks, close, info

void ShmQueue::task_done(uint64_t n) {
    HandleState& s = *s_;
    Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    bool zero;
    {
        LockedSection section(s.lock, s.slot);
        Counters& c = section.counters();
        if (c.unfinished < n) throw InvalidArgument("task_done() called too many times");
        c.unfinished -= n;
        if (s.slot >= 0) {
            uint64_t& mine = seg->slots[s.slot].outstanding;
            mine -= mine < n ? mine : n;
        }
        zero = c.unfinished == 0;
    }
    if (zero) seg->join_done.signal();
}

Status ShmQueue::join(double timeout) {
    HandleState& s = *s_;
    Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    const double deadline = deadline_for(timeout);
    for (;;) {
        uint32_t seen;
        uint64_t left;
        {
            LockedSection section(s.lock, -1, false);
            seen = seg->join_done.current();
            left = section.counters().unfinished;
        }
        if (left == 0) return Status::ok;
        if (detaching()) return Status::closed;
        if (timeout == 0) return Status::timeout;
        // Wake up now and then to write off the tasks of consumers that died.
        Status w = seg->join_done.wait(seen, deadline, true, s.spin_budget);
        if (w != Status::ok) return w;
        reap_dead_slots(s);
    }
}

void ShmQueue::close() {
    Segment* seg = s_->segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    seg->closed.store(1);
    seg->not_empty.signal();
    seg->not_full.signal();
    seg->join_done.signal();
}

bool ShmQueue::closed() const {
    const Segment* seg = s_->segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    return seg->closed.load() != 0;
}

uint64_t ShmQueue::qsize() const {
    HandleState& s = *s_;
    const Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    const uint64_t items = __atomic_load_n(&seg->c.items, __ATOMIC_ACQUIRE);
    if (seg->journal.active.load(std::memory_order_acquire) || items > s.segment.cap / kRecordHeader) {
        // A section is under way, or its holder died inside it, or the count is out of range:
        // the lock settles (recovers, or reports) it.
        LockedSection section(s.lock, -1, false);
        return section.counters().items;
    }
    return items;
}

Info ShmQueue::info() const {
    HandleState& s = *s_;
    const Segment* seg = s.segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    Info in{};
    std::vector<int> slots;
    {
        LockedSection section(s.lock, -1, false);
        const Counters& c = section.counters();
        in.capacity_bytes = s.segment.cap;
        in.maxsize = s.segment.maxsize;
        in.items = c.items;
        in.unfinished = c.unfinished;
        in.used_bytes = c.tail - c.head;
        in.head = c.head;
        in.read = c.read;
        in.tail = c.tail;
        in.stats = c.stats;
        for (int i = 0; i < kMaxSlots; ++i)
            if (seg->slots[i].pid.load()) slots.push_back(i);
    }
    in.waiting_getters = seg->not_empty.waiting();
    in.waiting_putters = seg->not_full.waiting();
    in.waiting_joiners = seg->join_done.waiting();
    in.closed = seg->closed.load() != 0;
    in.persistent = s.segment.persistent;
    in.version = kLayoutVersion;
    in.creator_pid = seg->creator_pid;
    for (int i : slots) in.attached.emplace_back(seg->slots[i].pid.load(), slot_liveness(seg, i));
    return in;
}

}  // namespace sage
