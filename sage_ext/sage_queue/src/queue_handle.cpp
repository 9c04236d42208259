// The handle's life (include/shm_queue.h): opening or creating a queue's segment
// (segment.h) and joining its users (segment_users.h), the slots a fork hands to a child,
// and detaching, where the last user out removes the segment.
#include "shm_queue.h"

#include <cerrno>
#include <unistd.h>
#include <utility>

#include "handle_state.h"
#include "segment_users.h"

namespace sage {

ShmQueue::ShmQueue(const std::string& name, uint64_t capacity_bytes, uint64_t maxsize, bool persistent,
                   OpenMode mode)
    : s_(std::make_unique<HandleState>(name)) {
    validate_name(name);
    if (capacity_bytes != 0 && (capacity_bytes < kMinCapacity || capacity_bytes > kMaxCapacity))
        throw InvalidArgument("capacity_bytes must be between " + std::to_string(kMinCapacity) + " and " +
                              std::to_string(kMaxCapacity) + ", got " + std::to_string(capacity_bytes));
    if (maxsize > kMaxMaxsize) throw InvalidArgument("maxsize is too large: " + std::to_string(maxsize));
    HandleState& s = *s_;
    const std::string path = segment_path(name);

    for (int attempt = 0; attempt < 5; ++attempt) {
        if (mode == OpenMode::open_or_create || mode == OpenMode::create_only) {
            int fd = create_segment_file(path, s.file);
            if (fd >= 0) {
                FileDescriptor owned(fd);
                s.segment = create_segment(fd, name, path, s.file, capacity_bytes, maxsize, persistent, s.me);
                s.slot = 0;
                return;
            }
            if (errno != EEXIST || mode == OpenMode::create_only)
                throw_errno("cannot create queue '" + name + "'", errno);
        }
        uint64_t file_size = 0;
        FileDescriptor fd(open_trusted_segment_file(path, name, s.file, file_size));
        if (!fd.valid()) {
            if (mode == OpenMode::open_or_create) continue;  // removed meanwhile: create it
            throw SystemError("no queue named '" + name + "' (no file " + shm_file_path(path) + ")", ENOENT);
        }
        try {
            s.segment = attach_segment(fd.get(), file_size, name, capacity_bytes, maxsize);
        } catch (const AbandonedSegment& e) {
            unlink_if_same_file(path, s.file);  // ours (the trust checks passed) and dead: reuse the name
            if (mode == OpenMode::open_only)
                throw SystemError("no queue named '" + name + "': " + e.what() + "; its file was removed", ENOENT);
            continue;
        }
        // From here on the mapping is ours to undo if joining fails.
        Joined joined;
        try {
            joined = join_users(s, mode != OpenMode::inspect);
        } catch (...) {
            s.segment.unmap();
            throw;
        }
        if (joined == Joined::ok) return;
        s.segment.unmap();
        if (mode == OpenMode::open_only) {
            if (joined == Joined::stale)
                throw SystemError("no queue named '" + name + "': the segment left by its users, who all exited "
                                  "without detaching, was removed", ENOENT);
            throw SystemError("queue '" + name + "' was just removed", ENOENT);
        }
        // removed (by its last user, or by us as stale): start over, which creates a fresh one
    }
    throw SystemError("queue '" + name + "' keeps being removed while opening it", EAGAIN);
}

ShmQueue::~ShmQueue() {
    try {
        detach();
    } catch (...) {
        // never throw from a destructor; the next user reaps our slot
    }
}

ShmQueue::InUse::InUse(ShmQueue& q) : q_(q) {
    HandleState& s = *q_.s_;
    s.users.fetch_add(1);
    if (!s.segment.seg || s.detaching.load()) {
        s.users.fetch_sub(1);
        throw InvalidArgument("queue '" + s.name + "' is detached from this process");
    }
}

ShmQueue::InUse::~InUse() { q_.s_->users.fetch_sub(1); }

void ShmQueue::detach() {
    HandleState& s = *s_;
    Segment* seg = s.segment.seg;
    if (!seg || s.detaching.exchange(true)) return;
    // Wake this process's blocked callers (they see detaching) and wait until they leave.
    while (s.users.load() > 0) {
        seg->not_empty.signal();
        seg->not_full.signal();
        seg->join_done.signal();
        usleep(200);  // only while another thread of ours is leaving a call
    }
    auto let_go = [&] {
        s.segment.unmap();
        s.slot = -1;
    };
    try {
        if (s.slot >= 0 && getpid() == s.me.pid) {
            LockedSection section(s.lock, s.slot);
            Slot& mine = seg->slots[s.slot];
            mine.outstanding = 0;  // our unfinished tasks stay counted: any process may task_done them
            mine.pid.store(0);
            bool anyone = false;
            for (int i = 0; i < kMaxSlots && !anyone; ++i)
                anyone = seg->slots[i].pid.load() != 0 && slot_liveness(seg, i) != Liveness::dead;
            if (!anyone && !s.segment.persistent && seg->unlinked.load() == 0) {
                remove_name(s);  // the name first: a death in between leaves nothing to trip on
                seg->unlinked.store(1);
            }
        }
    } catch (const CorruptSegment&) {
        // Let go of a corrupt segment all the same: `sage queue cleanup --force` removes it.
    } catch (...) {
        let_go();
        throw;
    }
    let_go();
}

bool ShmQueue::detaching() const { return s_->detaching.load(std::memory_order_relaxed); }
bool ShmQueue::attached() const { return s_->segment.seg != nullptr && !detaching(); }
const std::string& ShmQueue::name() const { return s_->name; }
uint64_t ShmQueue::capacity_bytes() const { return s_->segment.cap; }
uint64_t ShmQueue::maxsize() const { return s_->segment.maxsize; }

void ShmQueue::unlink() {
    Segment* seg = s_->segment.seg;
    if (!seg) throw InvalidArgument("queue is detached");
    remove_name(*s_);  // even if marked already: its marker may have died before removing it
    seg->unlinked.store(1);
}

void ShmQueue::before_fork() {
    HandleState& s = *s_;
    s.fork_slot = -1;
    try {
        InUse in_use(*this);  // a detach from another thread waits for us, or we skip
        if (s.slot < 0 || s.segment.seg->unlinked.load()) return;
        LockedSection section(s.lock, -1);
        s.fork_slot = take_slot_locked(s);
        Slot& reserved = s.segment.seg->slots[s.fork_slot];
        reserved.flags = kSlotForChild;
        reserved.outstanding = stamp_now_ns();  // when: see kSlotForChild
    } catch (...) {
        s.fork_slot = -1;  // no slot for the child: it takes one of its own after the fork
    }
}

void ShmQueue::after_fork_in_parent() { s_->fork_slot = -1; }  // the reserved slot is the child's now

void ShmQueue::after_fork_in_child() {
    HandleState& s = *s_;
    // Forked while another thread of the parent was detaching: the handle is going, and its
    // detach here would find it gone already.
    if (!s.segment.seg || getpid() == s.me.pid || detaching()) return;
    s.me = self_identity();
    s.users.store(0);  // calls in flight belonged to the parent's other threads
    s.slot = -1;
    const int reserved = std::exchange(s.fork_slot, -1);
    if (s.segment.seg->unlinked.load()) return;
    reap_dead_slots(s);  // children that came and went before us free their slots
    LockedSection section(s.lock, -1);
    s.slot = take_slot_locked(s, reserved);
}

}  // namespace sage
