"""Services: request queue per service, response queue per caller, ids correlate; sync and
async calls, errors raised in the caller, timeouts whose late replies are discarded,
services calling services, many concurrent callers. Both modes."""

import threading
import time

import pytest

from sage.core.api import LocalEnvironment
from sage.core.function import BaseService, MapFunction

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]


class QuotaExceeded(Exception):
    pass


class Calculator(BaseService):
    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.calls = 0

    def scale(self, x, offset=0):
        self.calls += 1
        return x * self.factor + offset

    def count(self):
        return self.calls

    def fail(self, what):
        raise QuotaExceeded(f"quota exceeded for {what}")

    def unpicklable_failure(self):
        error = RuntimeError("holds a lock")
        error.lock = threading.Lock()
        raise error

    def sleep_then(self, seconds, value):
        time.sleep(seconds)
        return value


class Plain:
    """Any class can be a service."""

    def __init__(self, greeting):
        self.greeting = greeting

    def greet(self, name):
        return f"{self.greeting}, {name}"


class UseCalculator(MapFunction):
    def execute(self, x):
        return self.call_service["calc"].scale(x, offset=1, timeout=10)


def test_sync_calls_from_every_instance(mode, collect):
    out = collect()
    env = LocalEnvironment("sync", mode=mode)
    env.register_service("calc", Calculator, 10)
    env.from_collection(range(200)).map(UseCalculator, parallelism=4).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == [x * 10 + 1 for x in range(200)]


class AsyncBatch(MapFunction):
    def execute(self, x):
        futures = [self.call_service_async["calc"].scale(x + i) for i in range(5)]
        greeting = self.call_service_async["plain"].greet(str(x))
        return [f.result(timeout=10) for f in futures], greeting.result(timeout=10)


def test_async_calls_return_futures_and_any_class_is_a_service(mode, collect):
    out = collect()
    env = LocalEnvironment("async", mode=mode)
    env.register_service("calc", Calculator, 2)
    env.register_service("plain", Plain, "hello")
    env.from_collection(range(30)).map(AsyncBatch, parallelism=2).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == [([2 * (x + i) for i in range(5)], f"hello, {x}")
                                   for x in range(30)]


class CatchErrors(MapFunction):
    def execute(self, x):
        try:
            self.call_service["calc"].fail(f"item {x}")
        except QuotaExceeded as exc:
            first = ("QuotaExceeded", str(exc))
        try:
            self.call_service["calc"].unpicklable_failure()
        except Exception as exc:  # thread mode: the RuntimeError itself; process: its image
            second = (type(exc).__name__, str(exc))
        try:
            self.call_service["calc"].no_such_method()
        except AttributeError as exc:
            third = ("AttributeError", "no_such_method" in str(exc))
        return first, second, third


def test_an_exception_in_the_service_is_raised_in_the_caller_with_type_and_message(mode, collect):
    out = collect()
    env = LocalEnvironment("errors", mode=mode)
    env.register_service("calc", Calculator, 1)
    env.from_collection([7]).map(CatchErrors).sink(out)
    env.submit(autostop=True)
    [(first, second, third)] = out.items()
    assert first == ("QuotaExceeded", "quota exceeded for item 7")
    expected_second = ("RuntimeError", "holds a lock") if mode == "thread" else (
        "RemoteServiceError", "RuntimeError: holds a lock")
    assert second == expected_second
    assert third == ("AttributeError", True)


class TimeoutThenNext(MapFunction):
    def execute(self, x):
        started = time.monotonic()
        try:
            self.call_service["calc"].sleep_then(0.5, "late", timeout=0.1)
            timed_out = False
        except TimeoutError:
            timed_out = True
        waited = time.monotonic() - started
        # the late "late" reply must not be taken for this call's answer
        answer = self.call_service["calc"].sleep_then(0.0, "fresh", timeout=5)
        late = self.ctx._caller.late_replies
        return timed_out, round(waited, 1), answer, late


def test_a_timeout_raises_and_the_late_reply_is_discarded(mode, collect):
    out = collect()
    env = LocalEnvironment("timeout", mode=mode)
    env.register_service("calc", Calculator, 1)
    env.from_collection([1]).map(TimeoutThenNext).sink(out)
    env.submit(autostop=True)
    [(timed_out, waited, answer, late)] = out.items()
    assert timed_out and waited < 0.4
    assert answer == "fresh" and late == 1


class AsyncTimeout(MapFunction):
    def execute(self, x):
        future = self.call_service_async["calc"].sleep_then(0.5, "late", timeout=0.05)
        try:
            future.result()  # no timeout here: the call's own deadline ends it
            return "answered"
        except TimeoutError:
            return "timed out"


def test_an_async_call_with_a_timeout_fails_its_future_at_the_deadline(mode, collect):
    out = collect()
    env = LocalEnvironment("async-timeout", mode=mode)
    env.register_service("calc", Calculator, 1)
    env.from_collection([1]).map(AsyncTimeout).sink(out)
    env.submit(autostop=True)
    assert out.items() == ["timed out"]


class Frontend(BaseService):
    def handle(self, x):
        doubled = self.call_service["calc"].scale(x, timeout=10)
        return self.call_service["plain"].greet(str(doubled), timeout=10)


def test_services_call_services(mode, collect):
    out = collect()
    env = LocalEnvironment("chain", mode=mode)
    env.register_service("calc", Calculator, 2)
    env.register_service("plain", Plain, "hi")
    env.register_service("front", Frontend)
    env.from_collection(range(20)).map(
        lambda x: None, parallelism=1).sink(lambda x: None)  # an unrelated branch
    (env.from_collection(range(20))
        .map(CallFront, parallelism=3)
        .sink(out))
    env.submit(autostop=True)
    assert sorted(out.items()) == sorted(f"hi, {2 * x}" for x in range(20))


class CallFront(MapFunction):
    def execute(self, x):
        return self.call_service["front"].handle(x)


class CountCalls(MapFunction):
    def execute(self, x):
        self.call_service["calc"].scale(x)
        return self.call_service["calc"].count()


def test_many_concurrent_callers_each_get_their_own_answers(mode, collect):
    out = collect()
    env = LocalEnvironment("many", mode=mode)
    env.register_service("calc", Calculator, 3)
    env.from_collection(range(400), parallelism=2).map(UseCalculator, parallelism=6).sink(out)
    env.from_collection(range(100)).map(CountCalls, parallelism=2).sink(lambda x: None)
    env.submit(autostop=True)
    assert sorted(out.items()) == [3 * x + 1 for x in range(400)]


class AskUnknown(MapFunction):
    def execute(self, x):
        try:
            self.call_service["nope"].anything()
        except KeyError as exc:
            return str(exc)


def test_an_unknown_service_is_a_key_error_naming_the_registered_ones(mode, collect):
    out = collect()
    env = LocalEnvironment("unknown", mode=mode)
    env.register_service("calc", Calculator, 1)
    env.from_collection([1]).map(AskUnknown).sink(out)
    env.submit(autostop=True)
    [message] = out.items()
    assert "nope" in message and "calc" in message


def test_register_service_checks_its_arguments():
    env = LocalEnvironment("reg")
    env.register_service("calc", Calculator, 1)
    with pytest.raises(ValueError, match="registered already"):
        env.register_service("calc", Calculator, 1)
    with pytest.raises(TypeError, match="class"):
        env.register_service("x", Calculator(1))


class CancelThenCall(MapFunction):
    def execute(self, x):
        future = self.call_service_async["calc"].sleep_then(0.2, "unwanted")
        cancelled = future.cancel()
        try:
            self.call_service["calc"].sleep_then(0.0, "x", timeout=0.05)
        except TimeoutError as exc:
            message = str(exc)
        return cancelled, self.call_service["calc"].scale(x, timeout=5), message


def test_a_cancelled_future_and_a_timeout_leave_the_caller_working(mode, collect):
    out = collect()
    env = LocalEnvironment("cancel", mode=mode)
    env.register_service("calc", Calculator, 2)
    env.from_collection([5]).map(CancelThenCall).sink(out)
    env.submit(autostop=True)
    [(cancelled, answer, message)] = out.items()
    assert cancelled and answer == 10
    assert "'sleep_then' (timeout 0.05 s) did not answer in time" in message


class CodedError(Exception):
    """Pickles (its args hold one message) but cannot be unpickled: __init__ wants two."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


class Coded(BaseService):
    def fail(self):
        raise CodedError(404, "no such page")

    def ok(self):
        return "ok"

    def big(self, size):
        return b"x" * size


class CallCoded(MapFunction):
    def execute(self, x):
        try:
            self.call_service["coded"].fail(timeout=10)
        except Exception as exc:  # thread mode: the error itself; process: its image
            failed = (type(exc).__name__, str(exc), getattr(exc, "traceback_text", ""))
        return failed, self.call_service["coded"].ok(timeout=10)


@pytest.mark.timeout(30)
def test_an_error_that_cannot_be_unpickled_reaches_the_caller_and_the_caller_goes_on(mode, collect):
    out = collect()
    env = LocalEnvironment("coded", mode=mode)
    env.register_service("coded", Coded)
    env.from_collection([1, 2]).map(CallCoded).sink(out)
    env.submit(autostop=True)
    results = out.items()
    assert len(results) == 2
    for (exc_type, message, text), answer in results:
        assert answer == "ok"
        if mode == "thread":
            assert (exc_type, message) == ("CodedError", "404: no such page")
        else:
            assert (exc_type, message) == ("RemoteServiceError", "CodedError: 404: no such page")
            assert "raise CodedError(404" in text  # the service's traceback comes along


class CallBig(MapFunction):
    def execute(self, size):
        try:
            return len(self.call_service["coded"].big(size, timeout=10))
        except Exception as exc:
            return type(exc).__name__, str(exc)


@pytest.mark.timeout(30)
def test_a_reply_larger_than_the_response_ring_is_an_error_naming_the_setting(mode, collect):
    out = collect()
    ring = 64 << 10
    env = LocalEnvironment("big-reply", mode=mode, config={"service_capacity_bytes": ring})
    env.register_service("coded", Coded)
    env.from_collection([100, 4 * ring]).map(CallBig).sink(out)
    env.submit(autostop=True)  # the job itself does not fail
    small, large = sorted(out.items(), key=lambda r: isinstance(r, tuple))
    assert small == 100
    if mode == "thread":
        assert large == 4 * ring  # no ring between threads
    else:
        exc_type, message = large
        assert exc_type == "RemoteServiceError"
        assert "'big'" in message and "service_capacity_bytes" in message
        assert f"{ring}" in message


def _service_task(requests, responses):
    from types import SimpleNamespace

    from sage.runtime.service.base_service_task import ServiceTask

    decl = SimpleNamespace(name="plain", cls=Plain, args=("hi",), kwargs={})
    return ServiceTask(SimpleNamespace(decl=decl), requests, responses, ctx=None)


def test_requests_queued_behind_stop_are_answered_with_service_stopped():
    from sage.runtime.service.service_caller import STOP_REQUEST
    from sage.utils import create_queue

    requests, replies = create_queue("python_queue"), create_queue("python_queue")
    requests.put((7, 0, "greet", ("a",), {}))
    requests.put(STOP_REQUEST)
    requests.put((7, 1, "greet", ("b",), {}))  # landed after STOP, before the close
    _service_task(requests, {7: replies}).run()
    first, second = replies.get(timeout=1), replies.get(timeout=1)
    assert first == (0, True, "hi, a")
    call_id, ok, error = second
    assert (call_id, ok) == (1, False)
    assert "service 'plain' has stopped" in str(error)


class _RepliesThatFailToDecodeOnce:
    """A response queue whose get_many raises once, as a reply that does not unpickle would."""

    def __init__(self):
        from sage.utils import create_queue

        self._queue = create_queue("python_queue")
        self.fail_next = True

    def put(self, item):
        self._queue.put(item)

    def get_many(self, max_items, block=True, timeout=None):
        items = self._queue.get_many(max_items, block, timeout)
        if self.fail_next and any(call_id >= 0 for call_id, _, _ in items):
            self.fail_next = False
            raise TypeError("CodedError.__init__() missing 1 required positional argument")
        return items

    def close(self):
        self._queue.close()


def test_the_reply_reader_survives_a_batch_it_cannot_read():
    from sage.runtime.service.service_caller import ServiceCaller
    from sage.utils import create_queue

    requests, replies = create_queue("python_queue"), _RepliesThatFailToDecodeOnce()
    caller = ServiceCaller(0, replies, {"svc": requests}, owner="test")
    try:
        lost = caller.submit("svc", "m", (), {})
        _, call_id, *_ = requests.get(timeout=1)
        replies.put((call_id, True, "lost in the batch"))
        with pytest.raises(RuntimeError, match="could not be read.*TypeError"):
            lost.result(timeout=5)
        later = caller.submit("svc", "m", (), {})
        _, call_id, *_ = requests.get(timeout=1)
        replies.put((call_id, True, "answer"))
        assert later.result(timeout=5) == "answer"
    finally:
        caller.close()


@pytest.mark.timeout(20)
def test_close_waits_a_bounded_time_for_a_reader_held_by_a_done_callback(monkeypatch):
    from sage.runtime.service import service_caller
    from sage.utils import create_queue

    monkeypatch.setattr(service_caller, "_CLOSE_JOIN_SECONDS", 0.2)
    requests, replies = create_queue("python_queue"), create_queue("python_queue")
    caller = service_caller.ServiceCaller(0, replies, {"svc": requests}, owner="test")
    release, on_reader = threading.Event(), []

    def hold(future):
        on_reader.append(threading.current_thread().name)
        release.wait(10)

    future = caller.submit("svc", "m", (), {})
    future.add_done_callback(hold)
    _, call_id, *_ = requests.get(timeout=1)
    replies.put((call_id, True, 1))
    assert future.result(timeout=5) == 1
    started = time.monotonic()
    caller.close()
    assert time.monotonic() - started < 2
    release.set()
    caller._reader.join(5)
    assert on_reader == ["sage-service-replies-test"]  # as the docstring says
