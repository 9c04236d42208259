// Waiting on a futex word (futex_word.h): spin briefly, then sleep in bounded slices.
#include "futex_word.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace sage {

namespace {

constexpr double kMaxSpinSeconds = 20e-6;  // a futex wake costs ~10 us each way on small VMs
constexpr double kLivenessSlice = 0.02;    // how often a waiter checks for dead peers
constexpr double kLostWakeSlice = 0.1;     // longest sleep: the sleeper count that gates wakes is shared memory

long futex_wait(std::atomic<uint32_t>* word, uint32_t expected, double seconds) {
    timespec rel{}, *relp = nullptr;
    if (std::isfinite(seconds)) {
        rel.tv_sec = time_t(seconds);
        rel.tv_nsec = long((seconds - double(rel.tv_sec)) * 1e9);
        relp = &rel;
    }
    // FUTEX_WAIT's relative timeout is measured on CLOCK_MONOTONIC.
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, relp, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace

double monotonic_seconds() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

double deadline_for(double timeout) { return timeout == 0 ? 0 : timeout < 0 ? INFINITY : monotonic_seconds() + timeout; }

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

void FutexWord::signal() {
    seq.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&seq);
}

Status FutexWord::wait(uint32_t seen, double deadline, bool check_liveness, std::atomic<double>& spin_budget) {
    const double start = monotonic_seconds();
    // Spin briefly: most waits end within microseconds, and sleeping costs a syscall each way.
    // The budget adapts to how long waits really last: if the event came within the longest
    // spin, spinning pays and the budget is full; if it came later (say the peer needed this
    // very core), spinning only burns it, and the budget halves.
    const double budget = spin_budget.load(std::memory_order_relaxed);
    for (int i = 0;; ++i) {
        if (seq.load(std::memory_order_acquire) != seen) return Status::ok;
        cpu_relax();
        if ((i & 63) == 63) {
            double t = monotonic_seconds();
            if (t >= deadline) return Status::timeout;
            if (t - start >= budget) break;
        }
    }
    auto learn = [&] {
        spin_budget.store(monotonic_seconds() - start <= kMaxSpinSeconds ? kMaxSpinSeconds : budget / 2,
                          std::memory_order_relaxed);
    };
    for (;;) {
        double t = monotonic_seconds();
        if (t >= deadline) return Status::timeout;
        // Never sleep without end: a wake skipped because the sleeper count was overwritten
        // (anything may write it) is found by the next look at the sequence word.
        const double slice = check_liveness ? kLivenessSlice : kLostWakeSlice;
        const double left = std::min(deadline - t, slice);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        bool interrupted = false;
        if (seq.load(std::memory_order_seq_cst) == seen)
            interrupted = futex_wait(&seq, seen, left) != 0 && errno == EINTR;
        // Take our count back without wrapping below zero.
        for (uint32_t n = sleepers.load(std::memory_order_seq_cst);
             n != 0 && !sleepers.compare_exchange_weak(n, n - 1, std::memory_order_seq_cst);) {
        }
        if (interrupted) return Status::interrupted;  // the caller runs the signal's handler
        if (seq.load(std::memory_order_acquire) != seen) {
            learn();
            return Status::ok;
        }
        if (check_liveness && monotonic_seconds() - t >= kLivenessSlice * 0.9) return Status::ok;  // caller rechecks peers
    }
}

}  // namespace sage
