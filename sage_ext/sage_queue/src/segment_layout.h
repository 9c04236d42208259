// The shared layout of a segment: the header, the attached handles' slots and the undo
// journal, then the ring (ring.h) from a page boundary on. Every process that maps a
// segment reads it through these structs; tools and tests read their offsets from
// layout_offsets() (exported as _native.LAYOUT), never by hand.
#pragma once

#include <atomic>
#include <cstdint>
#include <pthread.h>

#include "futex_word.h"
#include "ring.h"

namespace sage {

constexpr int kMaxSlots = 256;
constexpr uint64_t kMinCapacity = kPage;
constexpr uint64_t kMaxCapacity = 1ULL << 40;
constexpr uint64_t kMaxMaxsize = 1ULL << 40;
constexpr const char* kCleanup = "; remove it with `sage queue cleanup --force`";

// Slot flag: reserved by a parent for the child it is forking. The slot names the parent
// until the child claims it, which a child does first thing; its `outstanding` holds when
// it was reserved (stamp_now_ns), and a reservation still unclaimed after
// kChildClaimSeconds was left by a fork that failed or a child that died first.
constexpr uint32_t kSlotForChild = 1;

struct Slot {  // one attached handle
    std::atomic<int32_t> pid;
    uint32_t flags;
    uint64_t start;        // with pid, the process's identity (process_identity.h)
    uint64_t pidns;        // its pid namespace
    uint64_t outstanding;  // records this handle got and has not task_done'd (reserved: when)
};

struct SlotCopy { int32_t pid; uint32_t flags; uint64_t start, pidns, outstanding; };

// The undo journal of the locked section under way (robust_lock.h): what to restore if
// its holder dies inside it.
struct Journal {
    std::atomic<uint32_t> active;
    int32_t slot_index;
    Counters saved;
    SlotCopy saved_slot;

    void begin(const Counters& c, int slot, const Slot* slots);  // before any change it covers
    void cover_slot(int index, const Slot& s);                    // a slot the section is about to take
    void end();
};

struct Segment {
    uint64_t magic;
    uint32_t version;
    uint32_t header_bytes;
    uint64_t capacity;
    uint64_t maxsize;
    uint64_t ring_offset;
    uint64_t total_bytes;
    uint32_t persistent;
    int32_t creator_pid;
    std::atomic<uint32_t> ready;
    std::atomic<uint32_t> closed;
    std::atomic<uint32_t> unlinked;
    alignas(64) pthread_mutex_t mutex;
    Counters c;
    Journal journal;
    alignas(64) FutexWord not_empty;  // moves when records are committed (getters wait on it)
    alignas(64) FutexWord not_full;   // moves when room is freed (putters wait on it)
    alignas(64) FutexWord join_done;  // moves when the unfinished count reaches zero
    alignas(64) Slot slots[kMaxSlots];
};

constexpr uint64_t ring_offset() { return (sizeof(Segment) + kPage - 1) / kPage * kPage; }

}  // namespace sage
