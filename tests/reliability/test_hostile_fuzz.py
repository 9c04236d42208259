"""The hostile-segment fuzzer's short mode: words of a live queue overwritten, every call made.

Runs hostile_fuzz.py for a fixed time budget; any crash (a worker killed by a signal) or
hang (a call silent for HANG_SECONDS, or a blocked get()/put() that a put/get and then
close() do not wake) fails, naming the seed, trial, word, value and call.
The seed is $SAGE_FUZZ_SEED or random, and always printed; rerun one trial with
`python tests/reliability/hostile_fuzz.py --seed S --trial T -v`, or a long run with --long.
"""

import os
import random

import pytest

import hostile_fuzz  # tests/reliability/ is on sys.path, as for harness
from conftest import requires_native, scaled

BUDGET = 25.0  # seconds of trials; fewer of them under the sanitizer build, not a longer run
# A call refuses a lock word naming a live non-user in ~5 s: such a trial would make a dozen
# of them. In the short mode a trial starts no call after this long (the long mode calls all).
CALL_SECONDS = 6.0

pytestmark = [requires_native, pytest.mark.stress, pytest.mark.timeout(int(BUDGET + scaled(120)))]


def fuzz_seed() -> int:
    env = os.environ.get("SAGE_FUZZ_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 32)
    print(f"hostile fuzz seed {seed} (rerun with SAGE_FUZZ_SEED={seed})")
    return seed


def test_no_word_of_a_live_segment_makes_a_call_crash_or_hang():
    seed = fuzz_seed()
    # Random starting point in the seed's pass over every (word, value), so runs with the
    # same seed repeat and runs with new seeds cover different words first.
    first = random.Random(seed).randrange(len(hostile_fuzz.combos()))
    summary = hostile_fuzz.fuzz(seed, trials=10**6, first=first, budget=BUDGET, call_seconds=scaled(CALL_SECONDS))
    report = hostile_fuzz.format_summary(summary)
    print(report)
    assert summary["trials"] > 0, f"no trial ran (seed {seed})"
    assert not summary["crashes"] and not summary["hangs"], (
        f"seed {seed}: {len(summary['crashes'])} crashes, {len(summary['hangs'])} hangs\n{report}"
    )


@pytest.mark.parametrize("failure", ["crash", "hang"])
def test_fuzzer_names_the_trial_a_worker_died_or_stalled_in_and_goes_on(failure):
    seed = fuzz_seed()
    env = dict(os.environ, SAGE_HFUZZ_SELFTEST=f"{failure}@2")
    summary = hostile_fuzz.fuzz(seed, trials=4, hang_seconds=scaled(5), env=env, log=lambda _: None)
    found = {e["trial"]: e for e in summary["crashes" if failure == "crash" else "hangs"]}
    assert 2 in found, hostile_fuzz.format_summary(summary)
    assert found[2]["words"] and found[2]["op"] == "(before the first call)"
    assert found[2]["status"] == ("signal 6" if failure == "crash" else "signal 9")
    assert summary["trials"] == 4  # trial 3 ran in a new worker
