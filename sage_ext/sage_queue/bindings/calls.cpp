// The binding's queue calls (calls.h).
#include "calls.h"

#include "gil_policy.h"

namespace sage::binding {

namespace py = pybind11;

namespace {

// A small batch is tried with the GIL held (no syscall, no thread switch); a large one is
// copied with the GIL released; only a put that must wait blocks.
Status put_batch(ShmQueue& q, Batch& b, double timeout) {
    b.finish();
    auto put = [&](double t) { return q.put_many(b.msgs.data(), b.msgs.size(), t); };
    if (b.bytes < kLargeCopy) {
        Status st = gil_held([&] { return put(0); });
        if (st != Status::timeout || timeout == 0) return st;
    } else if (timeout == 0) {
        py::gil_scoped_release nogil;  // the copy
        return put(0);
    }
    return blocking(put, timeout);
}

// A call that ended because another thread detached the handle says so, not "closed".
void check_put(const ShmQueue& q, Status st) {
    if (st == Status::timeout) raise(support.full, "");
    if (st == Status::closed) raise(support.closed, q.detaching() ? "queue was detached while putting" : "queue is closed");
}

void check_get(const ShmQueue& q, Status st) {
    if (st == Status::timeout) raise(support.empty, "");
    if (st == Status::closed)
        raise(support.closed, q.detaching() ? "queue was detached while getting" : "queue is closed and empty");
}

Status claim(ShmQueue& q, size_t max_items, uint64_t max_bytes, double timeout, Records& out) {
    Status st = gil_held([&] { return q.claim(max_items, max_bytes, 0, out); });
    if (st != Status::timeout || timeout == 0) return st;
    return blocking([&](double t) { return q.claim(max_items, max_bytes, t, out); }, timeout);
}

}  // namespace

void put_one(ShmQueue& q, py::handle item, double timeout) {
    ShmQueue::InUse in_use(q);
    Pooled<Batch> b;
    encoder.add(*b, item.ptr());
    check_put(q, put_batch(q, *b, timeout));
}

void put_items(ShmQueue& q, py::iterable items, double timeout) {
    ShmQueue::InUse in_use(q);
    Pooled<Batch> b;
    for (py::handle item : items) encoder.add(*b, item.ptr());
    check_put(q, put_batch(q, *b, timeout));
}

py::object get_one(ShmQueue& q, double timeout) {
    ShmQueue::InUse in_use(q);
    Pooled<Records> got;
    check_get(q, claim(q, 1, UINT64_MAX, timeout, *got));
    ReleaseGuard guard{q, *got};
    return decode((*got)[0]);
}

py::list get_items(ShmQueue& q, size_t max_items, uint64_t max_bytes, double timeout) {
    ShmQueue::InUse in_use(q);
    Pooled<Records> got;
    check_get(q, claim(q, max_items, max_bytes, timeout, *got));
    ReleaseGuard guard{q, *got};
    py::list out(got->size());
    for (size_t i = 0; i < got->size(); ++i) out[i] = decode((*got)[i]);
    return out;
}

}  // namespace sage::binding
