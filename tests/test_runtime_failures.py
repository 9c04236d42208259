"""Failures end the job loudly and leave nothing behind: an exception in any function, a
task process killed by a signal, Ctrl-C or SIGTERM on the driver."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sage.core.api import JobFailedError, LocalEnvironment
from sage.core.function import BaseService, MapFunction, SourceFunction

from conftest import child_env, requires_native

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]

APPS = Path(__file__).parent / "apps"


class Explode(MapFunction):
    def execute(self, x):
        if x == 77:
            raise ValueError(f"cannot handle item {x}")
        return x


def test_an_exception_in_a_function_fails_the_job_naming_operator_and_instance(mode):
    env = LocalEnvironment("boom", mode=mode)
    env.from_collection(range(1000)).map(lambda x: x, parallelism=2).map(
        Explode, name="exploder").sink(lambda x: None, parallelism=3)
    with pytest.raises(JobFailedError) as info:
        env.submit(autostop=True)
    error = info.value
    assert (error.operator, error.instance, error.exc_type) == ("exploder", 0, "ValueError")
    assert error.message == "cannot handle item 77"
    assert "in execute" in error.traceback_text and "raise ValueError" in error.traceback_text
    assert "operator 'exploder' instance 0 failed: ValueError: cannot handle item 77" in str(error)
    assert env.job.state == "closed"  # submit(autostop=True) tears a failed job down
    env.close()  # after a failure close is quiet and idempotent
    env.close()


class BrokenSource(SourceFunction):
    def execute(self):
        if self.ctx.parallel_index == 1:
            raise KeyError("no such partition")
        return 1


def test_an_exception_in_one_source_instance_fails_the_running_job(mode):
    env = LocalEnvironment("source-fails", mode=mode)
    env.from_source(BrokenSource, parallelism=2, name="feed").sink(lambda x: None)
    env.submit()
    with pytest.raises(JobFailedError, match=r"'feed' instance 1 failed: KeyError") as info:
        env.wait(timeout=20)
    assert info.value.instance == 1
    env.close()


class CannotStart(BaseService):
    def __init__(self):
        raise OSError("model file missing")


def test_a_service_that_cannot_start_fails_the_job(mode):
    env = LocalEnvironment("service-fails", mode=mode)
    env.register_service("model", CannotStart)
    env.from_collection([1]).sink(lambda x: None)
    with pytest.raises(JobFailedError, match="service:model.*OSError: model file missing"):
        env.submit(autostop=True)


def test_a_failing_sink_behind_parallel_upstreams_does_not_hang_them(mode):
    def sink(x):
        if x == 5000:
            raise RuntimeError("disk full")

    env = LocalEnvironment("sink-fails", mode=mode, config={"queue_maxsize": 64,
                                                            "batch_size": 16})
    env.from_collection(range(100_000), parallelism=3).map(lambda x: x, parallelism=3).sink(sink)
    started = time.monotonic()
    with pytest.raises(JobFailedError, match="disk full"):
        env.submit(autostop=True)
    assert time.monotonic() - started < 20


class Forever(MapFunction):
    def execute(self, x):
        return x


@requires_native
def test_a_task_process_killed_by_a_signal_fails_the_job_within_a_second():
    env = LocalEnvironment("killed", mode="process")
    env.from_source(lambda: 1).map(Forever, parallelism=2, name="victim").sink(lambda x: None)
    job = env.submit()
    while sum(m.items_in for m in env.metrics() if m.operator == "victim") < 100:
        time.sleep(0.01)
    pid = job.task_pids["victim[1]"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(JobFailedError) as info:
        env.wait(timeout=10)
    assert time.monotonic() - killed_at < 1.0
    assert (info.value.operator, info.value.instance, info.value.exc_type) == (
        "victim", 1, "SIGKILL")
    assert f"pid {pid}" in info.value.message and "killed by signal SIGKILL" in info.value.message
    env.close()


class SlowDouble(MapFunction):
    def execute(self, x):
        time.sleep(0.0005)
        return 2 * x


def test_a_job_submitted_from_a_thread_that_ends_completes_with_every_item(mode, collect):
    out = collect()
    env = LocalEnvironment("from-thread", mode=mode)
    env.from_collection(range(2000)).map(SlowDouble, parallelism=2).sink(out)
    submitter = threading.Thread(target=env.submit)
    submitter.start()
    submitter.join()  # the thread that started (forked) the tasks is gone; they run on
    env.wait(timeout=30)
    env.close()
    assert sorted(out.items()) == [2 * x for x in range(2000)]


@requires_native
def test_task_processes_forked_by_a_thread_die_with_a_killed_driver():
    driver = subprocess.Popen([sys.executable, str(APPS / "driver_until_signal.py"), "process",
                               "sleep", "from-thread"], env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = driver.stdout.readline()
        assert line.startswith("READY"), line + driver.stderr.read()
        pids = json.loads(line.split(" ", 3)[1])
        assert all(_pid_alive(p) for p in pids)
        driver.kill()  # no handler runs: the tasks must notice on their own
        driver.wait(timeout=5)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    deadline = time.monotonic() + 3
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_pid_alive(p) for p in pids), "task processes outlived the driver"
    from sage_ext.sage_queue.python.sage_queue import SEGMENT_DIR, SEGMENT_PREFIX

    for name in os.listdir(SEGMENT_DIR):  # what the killed driver could not remove
        if name.startswith(f"{SEGMENT_PREFIX}sage-{driver.pid}-"):
            os.unlink(os.path.join(SEGMENT_DIR, name))


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("where", ["wait", "sleep"])
@pytest.mark.parametrize("driver_mode", ["thread", pytest.param("process", marks=requires_native)])
def test_ctrl_c_or_sigterm_on_the_driver_ends_everything_within_five_seconds(sig, where, driver_mode):
    driver = subprocess.Popen([sys.executable, str(APPS / "driver_until_signal.py"), driver_mode,
                               where], env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = driver.stdout.readline()
        assert line.startswith("READY"), line + driver.stderr.read()
        _, pids, segments, _ = line.split(" ", 3)
        pids, segments = json.loads(pids), json.loads(segments)
        assert all(_pid_alive(p) for p in pids) and all(os.path.exists(s) for s in segments)
        # let it reach its blocking call: a signal landing just before one is a race of
        # CPython's own (the handler would wait until the call returns)
        time.sleep(0.2)
        sent = time.monotonic()
        driver.send_signal(sig)
        driver.wait(timeout=5)
        assert time.monotonic() - sent < 5
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode != 0
    deadline = time.monotonic() + 2  # the kernel reaps orphans on its own time
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_pid_alive(p) for p in pids), "task processes outlived the driver"
    assert not [s for s in segments if os.path.exists(s)], "segments left"


@requires_native
def test_a_pipeline_too_big_for_dev_shm_fails_at_submit_naming_sizes_and_shm_size():
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    env = LocalEnvironment("too-big", mode="process",
                           config={"queue_capacity_bytes": free // 2 + (1 << 20), "chaining": False})
    env.from_collection([1]).map(lambda x: x).sink(lambda x: None)
    with pytest.raises(OSError, match=r"needs \d+\.\d MiB of shared memory.*--shm-size") as info:
        env.submit()
    assert info.value.errno == errno.ENOSPC


def _endless_job(mode: str, name: str):
    env = LocalEnvironment(name, mode=mode)
    env.from_source(lambda: 1).map(lambda x: x, parallelism=2).sink(lambda x: None)
    return env.submit()


def _before_first_join(job, action) -> None:
    """Run ``action`` when teardown first joins a task (a step in the middle of it)."""
    task = next(iter(job._operator_tasks.values()))
    real_join = task.join

    def join(timeout=None):
        task.join = real_join
        action()
        real_join(timeout)

    task.join = join


def test_a_teardown_cut_short_is_finished_by_the_next_close(mode):
    job = _endless_job(mode, "cut-short")

    def interrupt():
        raise KeyboardInterrupt

    _before_first_join(job, interrupt)
    with pytest.raises(KeyboardInterrupt):
        job.close()
    job.close()  # ends what the first teardown left: no_leftovers checks


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt in the test even when pytest runs in the background of
    a shell (which starts it with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_teardown_acts_after_it_with_nothing_left(mode, sig, sigint_raises):
    job = _endless_job(mode, "signal-in-teardown")
    _before_first_join(job, lambda: os.kill(os.getpid(), sig))
    raised = KeyboardInterrupt if sig == signal.SIGINT else SystemExit
    with pytest.raises(raised):
        job.close()  # no second close: the first one finished before the signal acted
    assert job.state == "closed" or job._torn_down
