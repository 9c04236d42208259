// The ring's operations (src/ring.h) on a private buffer: reserve, commit, claim, free,
// reclaim, padding, corrupt records, and the undo of claims.
#include <cstring>
#include <string>
#include <vector>

#include "ring.h"
#include "unit_test.h"

using namespace sage;

namespace {

constexpr Holder kMe{1234, 99};

bool never_dead(const void*, int32_t, uint32_t) { return false; }
bool always_dead(const void*, int32_t, uint32_t) { return true; }
constexpr HolderCheck kAlive{never_dead, nullptr};
constexpr HolderCheck kDead{always_dead, nullptr};

struct TestRing {  // a ring of `cap` bytes in private memory, with its counters
    explicit TestRing(uint64_t cap) : storage(cap / 8 + 1), ring{reinterpret_cast<uint8_t*>(storage.data()), cap} {}
    std::vector<uint64_t> storage;
    Ring ring;
    Counters c{};
    uint64_t shared_head = 0;

    // Reserves one record per payload, returns their offsets (empty if they do not fit).
    std::vector<uint64_t> reserve_payloads(const std::vector<std::string>& payloads) {
        std::vector<Part> parts;
        std::vector<Message> msgs;
        std::vector<uint64_t> sizes;
        parts.reserve(payloads.size());
        for (const std::string& p : payloads) {
            parts.push_back({p.data(), p.size()});
            msgs.push_back({7, &parts.back(), 1});
            sizes.push_back(payload_size(msgs.back()));
        }
        std::vector<uint64_t> offsets(payloads.size());
        if (!reserve(ring, c, shared_head, msgs.data(), sizes.data(), msgs.size(), kMe, offsets.data())) return {};
        for (size_t i = 0; i < msgs.size(); ++i) copy_payload(ring, offsets[i], msgs[i]);
        return offsets;
    }
    std::vector<uint64_t> put(const std::vector<std::string>& payloads) {
        std::vector<uint64_t> offsets = reserve_payloads(payloads);
        for (uint64_t off : offsets) commit(ring, off);
        return offsets;
    }
    std::vector<RecordView> claim(size_t max_items, HolderCheck check = kAlive, uint64_t max_bytes = UINT64_MAX,
                                  bool* corrupt = nullptr) {
        std::vector<RecordView> out;
        ClaimWalk walk = claim_records(ring, c, max_items, max_bytes, kMe, check, out);
        if (corrupt) *corrupt = walk.corrupt;
        return out;
    }
};

std::string text(const RecordView& v) { return std::string(reinterpret_cast<const char*>(v.payload), v.len); }

}  // namespace

TEST(counters_of_an_empty_ring_are_fine) {
    Counters c{};
    CHECK(counters_problem(c, 4096) == nullptr);
}

TEST(counters_out_of_order_out_of_range_oversized_misaligned_or_overcounted_are_named) {
    Counters c{};
    c.head = 64;
    CHECK_EQ(std::string(counters_problem(c, 4096)), "its ring positions are out of order");
    c = {};
    c.head = c.read = c.tail = kMaxOffset;
    CHECK_EQ(std::string(counters_problem(c, 4096)), "its ring positions are out of range");
    c = {};
    c.tail = c.read = 8192;
    CHECK_EQ(std::string(counters_problem(c, 4096)), "its ring holds more bytes than it has");
    c = {};
    c.tail = 40;
    CHECK_EQ(std::string(counters_problem(c, 4096)), "its ring positions are misaligned");
    c = {};
    c.tail = 64;
    c.items = 3;
    CHECK_EQ(std::string(counters_problem(c, 4096)), "its item count exceeds its records");
}

TEST(record_size_is_header_plus_payload_rounded_to_the_header) {
    CHECK_EQ(record_size(0), 32u);
    CHECK_EQ(record_size(1), 64u);
    CHECK_EQ(record_size(32), 64u);
    CHECK_EQ(record_size(33), 96u);
}

TEST(records_put_are_claimed_in_order_with_their_payloads) {
    TestRing t(1024);
    CHECK_EQ(t.put({"one", "two", "three"}).size(), 3u);
    CHECK_EQ(t.c.items, 3u);
    CHECK_EQ(t.c.unfinished, 3u);
    std::vector<RecordView> got = t.claim(10);
    CHECK_EQ(got.size(), 3u);
    CHECK_EQ(text(got[0]), "one");
    CHECK_EQ(text(got[1]), "two");
    CHECK_EQ(text(got[2]), "three");
    CHECK_EQ(int(got[0].tag), 7);
    CHECK_EQ(t.c.items, 0u);
    CHECK_EQ(t.c.read, t.c.tail);
    CHECK_EQ(t.c.stats.gets, 3u);
    CHECK_EQ(t.c.stats.bytes_got, 11u);
    CHECK(counters_problem(t.c, 1024) == nullptr);
}

TEST(a_reserved_record_of_a_live_producer_stops_the_claim) {
    TestRing t(1024);
    t.reserve_payloads({"pending"});
    t.put({"after"});
    CHECK(t.claim(10).empty());
    CHECK_EQ(t.c.read, 0u);
    commit(t.ring, 0);
    CHECK_EQ(t.claim(10).size(), 2u);
}

TEST(a_young_reserved_record_is_waited_for_without_asking_after_its_holder) {
    TestRing t(1024);
    t.reserve_payloads({"lost"});
    t.put({"kept"});
    CHECK(t.claim(10, kDead).empty());  // held for less than kLivenessAgeNs: not yet checked
    CHECK_EQ(t.c.read, 0u);
    CHECK_EQ(t.c.stats.abandoned_records, 0u);
}

TEST(an_old_reserved_record_of_a_dead_producer_is_skipped_and_counted) {
    TestRing t(1024);
    std::vector<uint64_t> off = t.reserve_payloads({"lost"});
    t.put({"kept"});
    t.ring.record(off[0])->stamp_ns = 0;  // held since boot
    CHECK(t.claim(10, kAlive).empty());   // old but alive: wait for it
    std::vector<RecordView> got = t.claim(10, kDead);
    CHECK_EQ(got.size(), 1u);
    CHECK_EQ(text(got[0]), "kept");
    CHECK_EQ(t.ring.record(off[0])->state.load(), uint32_t(kAbandoned));
    CHECK_EQ(t.c.stats.abandoned_records, 1u);
    CHECK_EQ(t.c.unfinished, 1u);
    CHECK_EQ(t.c.items, 0u);
}

TEST(claim_stops_at_max_bytes_but_always_takes_the_first) {
    TestRing t(1024);
    t.put({std::string(100, 'a'), std::string(100, 'b')});
    CHECK_EQ(t.claim(10, kAlive, 50).size(), 1u);
    CHECK_EQ(t.claim(10, kAlive, 150).size(), 1u);
}

TEST(a_record_that_does_not_fit_the_ring_is_reported_not_followed) {
    TestRing t(1024);
    std::vector<uint64_t> off = t.put({"x"});
    t.ring.record(off[0])->len = uint64_t(1) << 50;
    bool corrupt = false;
    CHECK(t.claim(10, kAlive, UINT64_MAX, &corrupt).empty());
    CHECK(corrupt);
    t.ring.record(off[0])->len = 1;
    t.ring.record(off[0])->state.store(77);
    CHECK(t.claim(10, kAlive, UINT64_MAX, &corrupt).empty());
    CHECK(corrupt);
}

TEST(read_record_refuses_a_record_across_the_ring_end_or_past_its_limit) {
    TestRing t(1024);
    t.ring.record(960)->len = 64;  // 96 bytes from 960 would cross 1024
    CHECK(!read_record(t.ring, 960, 4096).fits);
    t.ring.record(0)->len = 64;
    CHECK(read_record(t.ring, 0, 96).fits);
    CHECK(!read_record(t.ring, 0, 64).fits);
}

TEST(reserve_refuses_a_batch_larger_than_the_free_room_and_changes_nothing) {
    TestRing t(1024);
    t.put({std::string(400, 'a')});
    const Counters before = t.c;
    CHECK(t.reserve_payloads({std::string(300, 'b'), std::string(300, 'c')}).empty());
    CHECK_EQ(t.c.tail, before.tail);
    CHECK_EQ(t.c.items, before.items);
}

TEST(a_record_that_does_not_fit_before_the_ring_end_goes_after_padding) {
    TestRing t(1024);
    t.put({std::string(448, 'a'), std::string(448, 'b')});  // 480 bytes each: tail at 960
    std::vector<RecordView> first = t.claim(1);
    free_record(t.ring, first[0].offset);
    RingFault fault;
    CHECK(reclaim_space(t.ring, t.c, t.shared_head, kAlive, fault));
    CHECK(!fault);
    CHECK_EQ(t.c.head, 480u);
    CHECK_EQ(t.shared_head, 480u);
    std::vector<uint64_t> off = t.put({std::string(100, 'c')});
    CHECK_EQ(off.size(), 1u);
    CHECK_EQ(off[0], 1024u);  // past the padding at 960
    CHECK_EQ(t.ring.record(960)->state.load(), uint32_t(kPad));
    CHECK_EQ(t.ring.record(960)->len, 32u);
    std::vector<RecordView> got = t.claim(10);
    CHECK_EQ(got.size(), 2u);
    CHECK_EQ(text(got[0]), std::string(448, 'b'));
    CHECK_EQ(text(got[1]), std::string(100, 'c'));
    CHECK(counters_problem(t.c, 1024) == nullptr);
}

TEST(an_empty_ring_restarts_at_a_ring_boundary) {
    TestRing t(1024);
    t.put({"x"});
    std::vector<RecordView> got = t.claim(1);
    free_record(t.ring, got[0].offset);
    RingFault fault;
    reclaim_space(t.ring, t.c, t.shared_head, kAlive, fault);
    CHECK_EQ(t.c.head, t.c.tail);
    std::vector<uint64_t> off = t.put({"y"});
    CHECK_EQ(off[0], 1024u);
    CHECK_EQ(t.shared_head, 1024u);
}

TEST(reclaim_stops_at_a_record_its_live_consumer_still_copies) {
    TestRing t(1024);
    t.put({"a", "b"});
    std::vector<RecordView> got = t.claim(2);
    free_record(t.ring, got[1].offset);  // the first is still being copied out
    RingFault fault;
    CHECK(!reclaim_space(t.ring, t.c, t.shared_head, kAlive, fault));
    CHECK_EQ(t.c.head, 0u);
    t.ring.record(got[0].offset)->stamp_ns = 0;
    CHECK(reclaim_space(t.ring, t.c, t.shared_head, kDead, fault));  // its consumer died
    CHECK_EQ(t.c.head, t.c.read);
    CHECK_EQ(t.c.stats.reclaimed_records, 1u);
}

TEST(reclaim_reports_a_committed_or_broken_record_behind_read) {
    TestRing t(1024);
    std::vector<uint64_t> off = t.put({"a"});
    t.claim(1);
    commit(t.ring, off[0]);  // committed again: it cannot be behind read
    RingFault fault;
    reclaim_space(t.ring, t.c, t.shared_head, kAlive, fault);
    CHECK(fault.kind == RingFault::bad_state);
    CHECK_EQ(fault.state, uint32_t(kCommitted));
    t.ring.record(off[0])->len = 4096;
    fault = {};
    reclaim_space(t.ring, t.c, t.shared_head, kAlive, fault);
    CHECK(fault.kind == RingFault::bad_record);
    CHECK_EQ(fault.offset, 0u);
}

TEST(undo_claims_restores_claimed_and_abandoned_records) {
    TestRing t(1024);
    std::vector<uint64_t> off = t.reserve_payloads({"lost"});
    t.put({"kept"});
    const Counters before = t.c;
    t.ring.record(off[0])->stamp_ns = 0;
    CHECK_EQ(t.claim(10, kDead).size(), 1u);
    undo_claims(t.ring, before.read, before.tail);
    CHECK_EQ(t.ring.record(off[0])->state.load(), uint32_t(kReserved));
    t.c = before;
    commit(t.ring, off[0]);
    CHECK_EQ(t.claim(10).size(), 2u);
}

TEST(a_message_of_several_parts_carries_their_lengths_first) {
    TestRing t(1024);
    const std::string a = "pickle", b = "buffer!";
    Part parts[] = {{a.data(), a.size()}, {b.data(), b.size()}};
    Message m{0, parts, 2};
    CHECK_EQ(payload_size(m), 16u + 13u);
    uint64_t size = payload_size(m), off = 0;
    CHECK(reserve(t.ring, t.c, t.shared_head, &m, &size, 1, kMe, &off));
    copy_payload(t.ring, off, m);
    uint64_t lengths[2];
    memcpy(lengths, t.ring.payload(off), 16);
    CHECK_EQ(lengths[0], 6u);
    CHECK_EQ(lengths[1], 7u);
    CHECK_EQ(std::string(reinterpret_cast<const char*>(t.ring.payload(off)) + 16, 13), "picklebuffer!");
}
