// Who a process is, and whether it still runs, as seen from this pid namespace.
//
// A bare pid names a process only while it runs: once it exits, the kernel hands the
// number to the next process (soon, in a container's small pid space). So a process is
// (pid, start time), the start time read from /proc/<pid>/stat. And a pid is a number
// in its writer's pid namespace: a user of a segment in another namespace (a container
// sharing /dev/shm) cannot be looked up here, so its liveness is "unknown", never "dead".
#pragma once

#include <cstdint>

namespace sage {

struct ProcessIdentity {
    int32_t pid;
    uint64_t start;  // clock ticks after boot (field 22 of /proc/<pid>/stat); 0 if unknown
    uint64_t pidns;  // inode of /proc/<pid>/ns/pid; 0 if unknown
};

enum class Liveness : uint8_t { alive, dead, unknown };

// This process, as the next reader of /proc will see it (cached per pid, so a forked
// child gets its own).
ProcessIdentity self_identity();

// Whether `who` still runs. A zombie is dead; a pid now held by another process (its start
// time differs) is dead; a process of another pid namespace is unknown.
Liveness liveness(const ProcessIdentity& who);

// The same, for a holder recorded with only the low 32 bits of its start time.
Liveness liveness_by_start32(int32_t pid, uint32_t start32);

// The state letter of thread `tid` of this namespace ('R', 'S', 'D', 'T', 't', 'Z', ...),
// 0 if it cannot be read, and its CPU time so far in clock ticks.
char thread_state(int32_t tid, uint64_t* cpu_ticks = nullptr);

}  // namespace sage
