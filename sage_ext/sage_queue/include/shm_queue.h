// sage_queue native core: a multi-producer multi-consumer queue of byte records
// in one POSIX shared-memory segment that unrelated processes attach to by name.
//
// Protocol in one paragraph: a producer reserves space for its records under a
// process-shared robust mutex, copies the payload outside the lock, then commits
// each record by flipping its state word. A consumer claims committed records
// under the lock, copies them out, then frees them; producers advance the ring's
// head over freed records lazily, when they need the room. Every locked section
// is a small transaction with an undo journal, so a process killed inside it is
// rolled back by the next locker (EOWNERDEAD). Records reserved by a dead producer
// are skipped; records claimed by a dead consumer are reclaimed. Waiting is a
// short spin, then a futex wait on a sequence counter, timed on CLOCK_MONOTONIC.
//
// Where each part lives (src/): the shared layout (segment_layout.h) and attach
// (segment.h), the segment's users (segment_users.h), the lock and its journal
// (robust_lock.h), waiting (futex_word.h), the ring (ring.h); queue_handle.cpp (open,
// fork, detach) and shm_queue.cpp (the calls) compose them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "process_identity.h"

namespace sage {

// Errors the binding translates to Python exceptions.
struct InvalidArgument : std::invalid_argument { using std::invalid_argument::invalid_argument; };
struct SystemError : std::runtime_error {  // an OS call failed: errno kept
    int err;
    SystemError(const std::string& what, int e) : std::runtime_error(what), err(e) {}
};
struct CorruptSegment : std::runtime_error { using std::runtime_error::runtime_error; };
// The file at a queue's name is not one we may use (see segment_file.h).
struct UntrustedSegment : std::runtime_error { using std::runtime_error::runtime_error; };

// interrupted: a signal arrived while the call slept; the caller runs its handlers and
// calls again with what is left of its timeout.
enum class Status { ok, timeout, closed, interrupted };
// inspect: attach without taking a slot (for tools); never unlinks on detach.
enum class OpenMode { open_or_create, open_only, create_only, inspect };

struct Part { const void* data; size_t len; };               // one piece of a record's payload
struct Message { uint8_t tag; const Part* parts; uint16_t nparts; };
struct RecordView { uint64_t offset; uint8_t tag; uint16_t nparts; const uint8_t* payload; uint64_t len; };

struct Stats {  // shared counters, updated under the lock
    uint64_t puts, gets, bytes_put, bytes_got;
    uint64_t abandoned_records;   // reserved by a producer that died before commit
    uint64_t reclaimed_records;   // claimed by a consumer that died before freeing
    uint64_t written_off_tasks;   // unfinished tasks of dead consumers (for join)
    uint64_t lock_recoveries;     // lock owners that died inside a locked section
};

struct Info {  // one consistent snapshot of the header
    uint64_t capacity_bytes, maxsize, items, unfinished, used_bytes;
    uint32_t waiting_getters, waiting_putters, waiting_joiners;  // callers asleep in each wait
    uint64_t head, read, tail;
    bool closed, persistent;
    uint32_t version;
    int32_t creator_pid;
    Stats stats;
    std::vector<std::pair<int32_t, Liveness>> attached;  // pid (in its own namespace), liveness
};

// Shared facts: the native module exports them, and the Python tools read them from it.
constexpr const char* kSegmentPrefix = "sage_queue.";  // a queue's file is /dev/shm/<prefix><name>
constexpr uint64_t kDefaultCapacity = 8ULL << 20;     // ring bytes of a queue created without capacity_bytes
constexpr uint64_t kDefaultBatchBytes = 16ULL << 20;  // get_many stops adding items past this many payload bytes
constexpr uint64_t kMagic = 0x3145554555514753ULL;    // first word of a segment: "SGQUEUE1" in memory order
constexpr uint64_t kPage = 4096;                      // segments are whole pages; the ring starts on one
constexpr double kInitWaitSeconds = 2.0;              // how long an opener waits for a creator to finish
constexpr double kChildClaimSeconds = 5.0;            // a slot reserved for a forked child and not claimed is free after
constexpr size_t kRecordHeader = 32;     // bytes before each payload; also the record alignment
constexpr size_t kMaxNameLength = 200;
constexpr uint32_t kLayoutVersion = 3;  // 3: holders and slots carry process start times
constexpr double kForever = -1.0;        // timeout value: block until done

struct HandleState;  // what a handle keeps privately (src/handle_state.h)

// Byte offsets of the shared layout's fields ("segment.capacity", "slot.pid", "record.len", ...)
// and the sizes of its parts: for tools and tests that read a segment file, so no offset is
// typed by hand anywhere but the struct definitions.
std::vector<std::pair<std::string, size_t>> layout_offsets();

double monotonic_seconds();  // CLOCK_MONOTONIC: the clock every timeout is measured on

// Called on a thread that is about to sleep on a queue's lock held by another thread
// (after a short spin). The Python binding drops the GIL there: the holder may need the
// GIL before it can release the lock, so sleeping on it with the GIL held could deadlock.
using LockWaitHook = void (*)();
void set_lock_wait_hook(LockWaitHook hook);

class ShmQueue {
public:
    // capacity_bytes/maxsize of 0 mean "the existing segment's" on open, the default on create.
    ShmQueue(const std::string& name, uint64_t capacity_bytes, uint64_t maxsize,
             bool persistent, OpenMode mode);
    ~ShmQueue();
    ShmQueue(const ShmQueue&) = delete;
    ShmQueue& operator=(const ShmQueue&) = delete;

    // Reserve room for all messages at once, copy, commit: all or nothing.
    // timeout: 0 = do not block, < 0 = forever, > 0 seconds. A call that blocks returns
    // interrupted when a signal wakes it (put_many, claim and join alike).
    Status put_many(const Message* msgs, size_t n, double timeout);
    // Claim up to max_items committed records (at least one, at most max_bytes
    // unless the first alone is larger). Views stay valid until release().
    Status claim(size_t max_items, uint64_t max_bytes, double timeout, std::vector<RecordView>& out);
    void release(const std::vector<RecordView>& records);

    void task_done(uint64_t n);                     // throws InvalidArgument if called too often
    Status join(double timeout);
    void close();                                   // no more puts; wakes every waiter
    void unlink();                                  // remove the name now; mappings stay valid
    void detach();                                  // idempotent; the last live user unlinks
    // Around fork(): the parent reserves a slot for the child before it exists, so the
    // child counts as a user from the first instant; the child takes it over.
    void before_fork();
    void after_fork_in_parent();
    void after_fork_in_child();

    // Held by the binding around every call that touches the mapping, so detach()
    // from another thread waits for it instead of unmapping under its feet.
    class InUse {
    public:
        explicit InUse(ShmQueue& q);
        ~InUse();
        InUse(const InUse&) = delete;
        InUse& operator=(const InUse&) = delete;
    private:
        ShmQueue& q_;
    };

    uint64_t qsize() const;
    Info info() const;
    bool closed() const;  // the shared flag, read without the lock
    const std::string& name() const;
    uint64_t capacity_bytes() const;
    uint64_t maxsize() const;
    bool attached() const;
    bool detaching() const;

    static std::string segment_path(const std::string& name);  // "/sage_queue.<name>" (under /dev/shm)
    static void validate_name(const std::string& name);

private:
    std::unique_ptr<HandleState> s_;
};

}  // namespace sage
