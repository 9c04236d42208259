"""A driver that runs an endless pipeline until a signal ends it (test_runtime_failures).

Prints one line ``READY <pids> <segment files> <pid>`` once its tasks run, then blocks in
``env.wait()`` (argv[2] == "wait") or in a plain sleep (argv[2] == "sleep"). With
argv[3] == "from-thread" the job is submitted by a thread that has ended by then."""

import json
import os
import signal
import sys
import threading
import time

from sage.core.api import LocalEnvironment

# Ctrl-C as a terminal sends it, even when the test runs in the background of a shell
# (which starts its commands with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

mode, where = sys.argv[1], sys.argv[2]
env = LocalEnvironment("until-signal", mode=mode)
env.from_source(lambda: 1).map(lambda x: x + 1, parallelism=2).sink(lambda x: None)
if sys.argv[3:] == ["from-thread"]:
    submitter = threading.Thread(target=env.submit)
    submitter.start()
    submitter.join()
    job = env.job
else:
    job = env.submit()
pids = list(job.task_pids.values())
segments = []
if mode == "process":
    from sage_ext.sage_queue.python.sage_queue import SEGMENT_DIR, SEGMENT_PREFIX

    segments = [os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + name) for name in job.queue_names]
while sum(m.items_in for m in env.metrics()) < 100:
    time.sleep(0.01)
print("READY", json.dumps(pids, separators=(",", ":")), json.dumps(segments, separators=(",", ":")),
      os.getpid(), flush=True)
if where == "wait":
    env.wait()
else:
    time.sleep(60)
