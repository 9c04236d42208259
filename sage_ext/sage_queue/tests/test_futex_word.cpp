// Waiting on a futex word (src/futex_word.h): events, timeouts, and a wake lost because
// the shared sleeper count was overwritten.
#include <chrono>
#include <thread>

#include "futex_word.h"
#include "unit_test.h"

using namespace sage;

TEST(signal_advances_the_sequence) {
    FutexWord w{};
    const uint32_t seen = w.current();
    w.signal();
    CHECK_EQ(w.current(), seen + 1);
    CHECK_EQ(w.waiting(), 0u);
}

TEST(wait_returns_at_once_after_an_event) {
    FutexWord w{};
    std::atomic<double> budget{20e-6};
    const uint32_t seen = w.current();
    w.signal();
    CHECK(w.wait(seen, monotonic_seconds() + 5, false, budget) == Status::ok);
}

TEST(wait_times_out_at_its_deadline) {
    FutexWord w{};
    std::atomic<double> budget{20e-6};
    const double start = monotonic_seconds();
    CHECK(w.wait(w.current(), start + 0.05, false, budget) == Status::timeout);
    const double took = monotonic_seconds() - start;
    CHECK(took >= 0.05 && took < 2.0);
    CHECK_EQ(w.waiting(), 0u);
    CHECK(w.wait(w.current(), 0, false, budget) == Status::timeout);  // do not block
}

TEST(a_sleeper_is_woken_by_a_signal) {
    FutexWord w{};
    std::atomic<double> budget{20e-6};
    const uint32_t seen = w.current();
    std::thread signaller([&] {
        while (w.waiting() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        w.signal();
    });
    const double start = monotonic_seconds();
    CHECK(w.wait(seen, start + 10, false, budget) == Status::ok);
    signaller.join();
    CHECK(monotonic_seconds() - start < 5);
    CHECK_EQ(w.waiting(), 0u);
}

TEST(a_wake_lost_to_an_overwritten_sleeper_count_is_found_within_a_slice) {
    FutexWord w{};
    std::atomic<double> budget{20e-6};
    const uint32_t seen = w.current();
    std::thread writer([&] {
        while (w.waiting() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        w.sleepers.store(0);   // overwritten: the signal below wakes nobody
        w.signal();
    });
    const double start = monotonic_seconds();
    CHECK(w.wait(seen, start + 10, false, budget) == Status::ok);
    writer.join();
    CHECK(monotonic_seconds() - start < 1.0);  // the 100 ms slice, with room for a busy machine
    CHECK_EQ(w.waiting(), 0u);                  // our count taken back without wrapping below zero
}
