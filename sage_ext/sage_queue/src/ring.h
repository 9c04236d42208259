// The ring: one byte ring of length-prefixed records, and the operations on it as
// functions over the counters and the ring's bytes. Every operation is bounded: a record's
// length is checked against the ring before it is followed, a walk covers at most one ring.
//
// A record is a 32-byte header and its payload, rounded up to 32 bytes. Its state word
// moves reserved -> committed -> claimed -> free (or reserved -> abandoned when its
// producer dies first); a padding record fills the end of the ring when the next record
// does not fit there. Positions (head, read, tail) grow without wrapping; a record at
// position p lives at byte p % capacity.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "shm_queue.h"

namespace sage {

struct Counters {  // everything a locked section may change, saved by the journal
    uint64_t head;        // oldest byte not yet freed
    uint64_t read;        // next record to claim
    uint64_t tail;        // next byte to reserve
    uint64_t items;       // records reserved or committed, not yet claimed
    uint64_t unfinished;  // puts not yet matched by task_done
    Stats stats;
};

enum RecordState : uint32_t {
    kReserved = 1, kCommitted = 2, kClaimed = 3, kFree = 4, kPad = 5, kAbandoned = 6,
};

struct RecordHeader {
    std::atomic<uint32_t> state;
    uint8_t tag;
    uint8_t unused0;
    uint16_t nparts;
    int32_t holder;         // the producer while reserved, the consumer once claimed
    uint32_t holder_start;  // low 32 bits of the holder's start time: a reused pid is not it
    uint64_t len;           // payload bytes
    uint64_t stamp_ns;      // CLOCK_MONOTONIC_COARSE when reserved (then when claimed): age of the hold
};
static_assert(sizeof(RecordHeader) == kRecordHeader, "record header must be 32 bytes");

constexpr uint64_t kMaxOffset = 1ULL << 62;     // ring positions stay below: no sum of them overflows
constexpr uint64_t kLivenessAgeNs = 20000000;  // a record held longer than this gets its holder checked

inline uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
inline uint64_t record_size(uint64_t payload) { return round_up(kRecordHeader + payload, kRecordHeader); }

// Payload bytes of a message: its parts, after a table of their lengths if more than one.
uint64_t payload_size(const Message& m);

// CLOCK_MONOTONIC_COARSE in ns: the stamp of a hold, the same clock in every process.
uint64_t stamp_now_ns();

// What is wrong with ring positions and item count `c` in a ring of `cap` bytes; nullptr
// if nothing. Every loop over records is bounded by these: read walks at most one ring.
const char* counters_problem(const Counters& c, uint64_t cap);

struct Ring {  // the ring's bytes, `cap` of them, and the records in them
    uint8_t* bytes;
    uint64_t cap;
    RecordHeader* record(uint64_t offset) const { return reinterpret_cast<RecordHeader*>(bytes + offset % cap); }
    uint8_t* payload(uint64_t offset) const { return bytes + offset % cap + kRecordHeader; }
};

// One record header, read once. `len` and `size` are valid only if `fits`.
struct RecordFacts {
    uint32_t state;
    uint64_t len, size;
    bool fits;  // its length is within the ring and the record ends where it may (`limit`)
};
RecordFacts read_record(const Ring& ring, uint64_t offset, uint64_t limit);

struct Holder {  // who reserves or claims: written into the record's header
    int32_t pid;
    uint32_t start32;
};

// Whether the holder of a record is dead. Asked only of holds older than kLivenessAgeNs:
// a live peer is usually mid-copy, and the answer costs syscalls and /proc reads.
struct HolderCheck {
    bool (*dead)(const void* context, int32_t pid, uint32_t start32);
    const void* context;
    bool old_and_dead(const RecordHeader* r, uint64_t now) const;
};

// Reserves records of payload sizes `sizes[0..n)` at the tail, padding to the ring's end
// where one does not fit there; their offsets go to `offsets`. An empty ring restarts at a
// ring boundary first (head stored through to `shared_head`). False, with only that
// restart done, if the batch does not fit between head and one ring later.
bool reserve(const Ring& ring, Counters& c, uint64_t& shared_head, const Message* msgs, const uint64_t* sizes,
             size_t n, Holder me, uint64_t* offsets);

// Copies message `m` into the record reserved at `offset`; commit() then makes it visible.
void copy_payload(const Ring& ring, uint64_t offset, const Message& m);
void commit(const Ring& ring, uint64_t offset);
void free_record(const Ring& ring, uint64_t offset);

// Something wrong found while walking the ring: a record that does not fit, or one in a
// state it cannot be in where it was found.
struct RingFault {
    enum Kind { none, bad_record, bad_state } kind = none;
    uint64_t offset = 0;
    uint32_t state = 0;
    explicit operator bool() const { return kind != none; }
};

// Advances head over records that are consumed (or whose consumer died while copying
// them out). Head is stored through to `shared_head` at once: a section that dies after
// reusing the space must not have head rolled back over it. True if head moved; stops at
// the first fault.
bool reclaim_space(const Ring& ring, Counters& c, uint64_t& shared_head, HolderCheck check, RingFault& fault);

// Claims up to max_items committed records from read on (at most max_bytes unless the
// first alone is larger), skipping padding and the records of producers that died before
// committing. Stops at a reserved record whose producer lives, or at a corrupt record
// (`corrupt`). Counts the claims in `c`.
struct ClaimWalk {
    uint64_t bytes = 0;
    bool corrupt = false;
};
ClaimWalk claim_records(const Ring& ring, Counters& c, size_t max_items, uint64_t max_bytes, Holder me,
                        HolderCheck check, std::vector<RecordView>& out);

// Past a restored read position a record can only be reserved, committed or padding:
// undoes any claim or abandonment a rolled-back section made in [read, tail).
void undo_claims(const Ring& ring, uint64_t read, uint64_t tail);

}  // namespace sage
