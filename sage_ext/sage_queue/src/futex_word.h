// Waiting: a futex word, a sequence counter that moves on every event and the count of
// callers asleep on it, so an event with nobody asleep costs no syscall. It lives in
// shared memory, so anything may write it: a waiter never sleeps longer than a slice,
// and never trusts the sleeper count to wake it.
#pragma once

#include <atomic>
#include <cstdint>

#include "shm_queue.h"

namespace sage {

// A call that may not block needs no deadline, nor the clock read for one.
double deadline_for(double timeout);

void cpu_relax();  // the CPU's spin-wait hint

struct FutexWord {
    std::atomic<uint32_t> seq;
    std::atomic<uint32_t> sleepers;

    // Read before the condition is checked (under the lock); wait() then sleeps only while
    // no event came after it.
    uint32_t current() const { return seq.load(std::memory_order_seq_cst); }
    uint32_t waiting() const { return sleepers.load(); }  // callers asleep now
    void signal();  // an event: advance the sequence and wake the sleepers, if any
    // Waits until the sequence moves past `seen`, the deadline passes (timeout) or a signal
    // arrives (interrupted). Spins first for up to `spin_budget` seconds, then sleeps in
    // slices: with `check_liveness`, returns ok after a 20 ms slice so the caller can look
    // for dead peers; otherwise a 100 ms slice finds a wake lost to an overwritten sleeper
    // count. The budget adapts to how long waits really last.
    Status wait(uint32_t seen, double deadline, bool check_liveness, std::atomic<double>& spin_budget);
};
static_assert(sizeof(FutexWord) == 8, "a futex word is two shared 32-bit words");

}  // namespace sage
