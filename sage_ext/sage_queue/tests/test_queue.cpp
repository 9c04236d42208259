// The composed queue (include/shm_queue.h) without Python: names, a round trip through a
// real segment, all-or-nothing batches, close, and the segment's removal by its last user.
#include <unistd.h>

#include <cstring>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "segment_file.h"
#include "shm_queue.h"
#include "unit_test.h"

using namespace sage;

namespace {

std::string unique_name(const char* what) {
    static int n = 0;
    return std::string("unit-") + what + "-" + std::to_string(getpid()) + "-" + std::to_string(++n);
}

bool segment_exists(const std::string& name) {
    struct stat st{};
    return stat(shm_file_path(ShmQueue::segment_path(name)).c_str(), &st) == 0;
}

template <class E, class F>
std::string thrown(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

Status put_text(ShmQueue& q, const std::string& text, double timeout = 0) {
    Part part{text.data(), text.size()};
    Message m{1, &part, 1};
    return q.put_many(&m, 1, timeout);
}

}  // namespace

TEST(good_names_pass_and_bad_names_say_what_is_wrong) {
    ShmQueue::validate_name("events_1.a-b");
    CHECK(thrown<InvalidArgument>([] { ShmQueue::validate_name(""); }).find("empty") != std::string::npos);
    CHECK(thrown<InvalidArgument>([] { ShmQueue::validate_name("a/b"); }).find("'/'") != std::string::npos);
    CHECK(thrown<InvalidArgument>([] { ShmQueue::validate_name("a..b"); }).find("'..'") != std::string::npos);
    CHECK(thrown<InvalidArgument>([] { ShmQueue::validate_name("caf\xc3\xa9"); }).find("U+00E9") != std::string::npos);
    CHECK(thrown<InvalidArgument>([] { ShmQueue::validate_name(std::string(kMaxNameLength + 1, 'x')); })
              .find("the limit is") != std::string::npos);
    CHECK_EQ(ShmQueue::segment_path("q"), std::string("/") + kSegmentPrefix + "q");
}

TEST(records_put_are_claimed_in_order_and_released) {
    const std::string name = unique_name("roundtrip");
    ShmQueue q(name, 64 * 1024, 0, false, OpenMode::create_only);
    CHECK(segment_exists(name));
    CHECK(put_text(q, "first") == Status::ok);
    CHECK(put_text(q, "second") == Status::ok);
    CHECK_EQ(q.qsize(), 2u);
    std::vector<RecordView> got;
    CHECK(q.claim(10, UINT64_MAX, 0, got) == Status::ok);
    CHECK_EQ(got.size(), 2u);
    CHECK_EQ(std::string(reinterpret_cast<const char*>(got[0].payload), got[0].len), "first");
    CHECK_EQ(std::string(reinterpret_cast<const char*>(got[1].payload), got[1].len), "second");
    CHECK_EQ(int(got[1].tag), 1);
    q.release(got);
    CHECK_EQ(q.qsize(), 0u);
    CHECK(q.claim(1, UINT64_MAX, 0, got) == Status::timeout);
    const Info in = q.info();
    CHECK_EQ(in.stats.puts, 2u);
    CHECK_EQ(in.stats.gets, 2u);
    CHECK_EQ(in.unfinished, 2u);
    q.task_done(2);
    CHECK(q.join(0) == Status::ok);
    q.detach();
    CHECK(!segment_exists(name));  // the last user removed it
}

TEST(a_batch_that_does_not_fit_puts_nothing) {
    const std::string name = unique_name("batch");
    ShmQueue q(name, 4096, 3, false, OpenMode::create_only);
    const std::string big(5000, 'x');
    CHECK(thrown<InvalidArgument>([&] { put_text(q, big); }).find("larger than the ring") != std::string::npos);
    for (int i = 0; i < 3; ++i) CHECK(put_text(q, "x") == Status::ok);
    CHECK(put_text(q, "x") == Status::timeout);  // maxsize=3: full
    const double start = monotonic_seconds();
    CHECK(put_text(q, "x", 0.05) == Status::timeout);
    CHECK(monotonic_seconds() - start >= 0.05);
    CHECK_EQ(q.qsize(), 3u);
    q.detach();
}

TEST(close_ends_puts_at_once_and_gets_once_drained) {
    const std::string name = unique_name("close");
    ShmQueue q(name, 4096, 0, false, OpenMode::create_only);
    CHECK(put_text(q, "last") == Status::ok);
    CHECK(!q.closed());
    q.close();
    CHECK(q.closed());
    CHECK(put_text(q, "more") == Status::closed);
    std::vector<RecordView> got;
    CHECK(q.claim(1, UINT64_MAX, 0, got) == Status::ok);
    q.release(got);
    CHECK(q.claim(1, UINT64_MAX, 1.0, got) == Status::closed);
    q.detach();
    CHECK(thrown<InvalidArgument>([&] { q.closed(); }).find("detached") != std::string::npos);
}

TEST(a_second_handle_shares_the_queue_and_the_segment_stays_until_both_leave) {
    const std::string name = unique_name("two");
    ShmQueue a(name, 4096, 0, false, OpenMode::create_only);
    ShmQueue b(name, 0, 0, false, OpenMode::open_only);
    CHECK_EQ(b.capacity_bytes(), 4096u);
    CHECK(put_text(a, "hello") == Status::ok);
    CHECK_EQ(b.qsize(), 1u);
    a.detach();
    CHECK(segment_exists(name));
    b.detach();
    CHECK(!segment_exists(name));
    CHECK(thrown<SystemError>([&] { ShmQueue c(name, 0, 0, false, OpenMode::open_only); }).find("no queue") !=
          std::string::npos);
}
