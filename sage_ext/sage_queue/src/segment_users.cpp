// The segment's users (segment_users.h).
#include "segment_users.h"

#include <cerrno>

namespace sage {

Liveness slot_liveness(const Segment* seg, int index) {
    const Slot& s = seg->slots[index];
    if (s.flags == kSlotForChild && stamp_now_ns() - s.outstanding > uint64_t(kChildClaimSeconds * 1e9))
        return Liveness::dead;  // a reservation no child claimed
    return liveness(ProcessIdentity{s.pid.load(), s.start, s.pidns});
}

// A record's holder is known by its pid and the low bits of its start time; its slot, if
// it has one, says which pid namespace that pid belongs to.
Liveness holder_liveness(const Segment* seg, int32_t pid, uint32_t start32) {
    for (int i = 0; i < kMaxSlots; ++i) {
        const Slot& s = seg->slots[i];
        if (s.pid.load() == pid && uint32_t(s.start) == start32) return slot_liveness(seg, i);
    }
    return liveness_by_start32(pid, start32);
}

HolderCheck holder_check(const HandleState& s) {
    return {[](const void* seg, int32_t pid, uint32_t start32) {
                return holder_liveness(static_cast<const Segment*>(seg), pid, start32) == Liveness::dead;
            },
            s.segment.seg};
}

Holder holder(const HandleState& s) { return {s.me.pid, uint32_t(s.me.start)}; }

bool remove_name(HandleState& s) { return unlink_if_same_file(ShmQueue::segment_path(s.name), s.file); }

// Takes slot `prefer` if it is the one our parent reserved for us, else a free one.
int take_slot_locked(HandleState& s, int prefer) {
    Segment* seg = s.segment.seg;
    int index = -1;
    if (prefer >= 0 && prefer < kMaxSlots && seg->slots[prefer].flags == kSlotForChild) index = prefer;
    for (int i = 0; i < kMaxSlots && index < 0; ++i)
        if (seg->slots[i].pid.load() == 0) index = i;
    if (index < 0)
        throw SystemError("queue '" + s.name + "' already has " + std::to_string(kMaxSlots) +
                          " attached handles; detach some first", EMFILE);
    Slot& slot = seg->slots[index];
    seg->journal.cover_slot(index, slot);
    slot.flags = 0;
    slot.start = s.me.start;
    slot.pidns = s.me.pidns;
    slot.outstanding = 0;
    slot.pid.store(s.me.pid);
    return index;
}

void reap_dead_slots(HandleState& s) {
    Segment* seg = s.segment.seg;
    for (int i = 0; i < kMaxSlots; ++i) {
        const int32_t p = seg->slots[i].pid.load();
        const bool own = p == s.me.pid && seg->slots[i].start == s.me.start && seg->slots[i].flags != kSlotForChild;
        if (p == 0 || own || slot_liveness(seg, i) != Liveness::dead)
            continue;
        bool zero = false;
        {
            LockedSection section(s.lock, i);
            Slot& slot = seg->slots[i];
            if (slot.pid.load() == p) {
                Counters& c = section.counters();
                const uint64_t held = slot.flags == kSlotForChild ? 0 : slot.outstanding;  // a reservation holds none
                uint64_t lost = held < c.unfinished ? held : c.unfinished;
                c.unfinished -= lost;
                c.stats.written_off_tasks += lost;
                slot.outstanding = 0;
                slot.flags = 0;
                slot.pid.store(0);
                zero = lost && c.unfinished == 0;
            }
        }
        if (zero) seg->join_done.signal();
    }
}

// Joins the segment's users: takes a slot (unless only inspecting), after checking the
// counters. A segment whose users all died without detaching is stale: it is removed
// (its name, while it is still ours) instead of joined.
Joined join_users(HandleState& s, bool take_slot) {
    if (!take_slot) {
        LockedSection section(s.lock, -1, false);  // only the counters' check
        return Joined::ok;
    }
    reap_dead_slots(s);
    Segment* seg = s.segment.seg;
    LockedSection section(s.lock, -1);
    if (seg->unlinked.load() != 0) {
        // Its last user removes the name after marking it; one that died in between left the
        // name to whoever comes next (removed only while it is still this file).
        remove_name(s);
        return Joined::removed;
    }
    bool users = s.segment.persistent;
    for (int i = 0; i < kMaxSlots && !users; ++i) users = seg->slots[i].pid.load() != 0;
    if (!users) {
        remove_name(s);  // the name first: a death in between leaves nothing to trip on
        seg->unlinked.store(1);
        return Joined::stale;
    }
    s.slot = take_slot_locked(s);
    return Joined::ok;
}

}  // namespace sage
