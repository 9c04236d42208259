// The users of a segment: one slot per attached handle, naming its process, so that the
// last user to leave removes the segment, a dead user's tasks are written off, and the
// holder of a record can be judged alive or dead.
#pragma once

#include <cstdint>

#include "handle_state.h"

namespace sage {

Liveness slot_liveness(const Segment* seg, int index);

// A record's holder is known by its pid and the low bits of its start time; its slot, if
// it has one, says which pid namespace that pid belongs to.
Liveness holder_liveness(const Segment* seg, int32_t pid, uint32_t start32);

// The ring's question "is this holder dead?" (ring.h), answered from the slots and /proc.
HolderCheck holder_check(const HandleState& s);
Holder holder(const HandleState& s);  // this handle, as written into the records it holds

// Removes the queue's name while it still refers to our file.
bool remove_name(HandleState& s);

// Takes slot `prefer` if it is the one our parent reserved for us, else a free one; inside
// a locked section, whose journal covers the slot.
int take_slot_locked(HandleState& s, int prefer = -1);

// Frees the slots of dead users, writing off their unfinished tasks.
void reap_dead_slots(HandleState& s);

enum class Joined { ok, removed, stale };

// Joins the segment's users: takes a slot (unless only inspecting), after checking the
// counters. A segment whose users all died without detaching is stale: it is removed
// (its name, while it is still ours) instead of joined.
Joined join_users(HandleState& s, bool take_slot);

}  // namespace sage
