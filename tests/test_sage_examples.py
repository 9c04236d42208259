"""SAGE-style example apps (tests/apps/) run unchanged, as scripts, and print the right
results: lambdas and classes defined in __main__, in thread and process mode."""

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env, requires_native

APPS = Path(__file__).parent / "apps"
MODES = ["thread", pytest.param("process", marks=requires_native)]
pytestmark = pytest.mark.timeout(120)


def run_app(name: str, *args: str) -> list:
    done = subprocess.run([sys.executable, str(APPS / f"{name}.py"), *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def test_batch_wordcount_with_a_driver_side_counter():
    lines = run_app("wordcount_batch")
    sentences = ["hello world sage framework", "this is a streaming data processing example",
                 "lambda functions make the code much cleaner",
                 "word count is a classic big data example",
                 "sage provides powerful stream processing capabilities"]
    expected = collections.Counter(w for s in sentences for w in s.split() if len(w) > 2)
    counts = {line.split(":")[0].strip(): int(line.split(":")[1])
              for line in lines if ":" in line and not line.startswith("Total")}
    assert counts == expected
    assert lines[-1] == f"Total words processed: {sum(expected.values())}"


@pytest.mark.parametrize("mode", MODES)
def test_keyby_wordcount_counts_every_word_in_one_instance(mode):
    lines = run_app("wordcount_keyby", mode)
    text = ["to be or not to be", "that is the question",
            "whether tis nobler in the mind to suffer",
            "the slings and arrows of outrageous fortune"] * 25
    expected = collections.Counter(w for line in text for w in line.split())
    final, instances = {}, collections.defaultdict(set)
    for line in lines:
        if line.startswith("count "):
            _, word, count, instance = line.split()
            final[word] = max(final.get(word, 0), int(count))
            instances[word].add(instance)
    assert final == expected
    assert all(len(seen) == 1 for seen in instances.values())
    assert lines[-1] == f"summary {sum(expected.values())}"


@pytest.mark.parametrize("mode", MODES)
def test_connected_streams_example(mode):
    # the app's sink prints with print(): text and newline are two writes, and in thread
    # mode another thread's line can land between them, so match messages, not lines
    output = "\n".join(run_app("connected_streams", mode))
    numbers = range(1, 13)
    tagged = ([("EVEN", n) for n in numbers if n % 2 == 0] + [("ODD", n) for n in numbers if n % 2]
              + [("MULTIPLE_3", n) for n in numbers if n % 3 == 0]
              + [("LARGE", n) for n in numbers if n > 5])
    processed = sorted(f"Processed: {t} -> {n}" for t, n in tagged)
    message = r"(Processed: \w+ -> \d+)"
    assert sorted(re.findall("Final Result: " + message, output)) == processed
    assert sorted(re.findall(r"\[FinalSink\] Received: " + message, output)) == processed


@pytest.mark.parametrize("mode", MODES)
def test_comap_with_lambdas_until_stop(mode):
    lines = run_app("comap_lambdas", mode)
    assert sorted(lines) == sorted([
        "Sensor Data: sensor temperature 20.5 Normal", "Sensor Data: sensor temperature 22.1 Normal",
        "Sensor Data: sensor temperature 19.8 Normal", "Sensor Data: sensor temperature 25.3 Hot",
        "Sensor Data: sensor temperature 21.7 Normal", "Sensor Data: sensor humidity 45 Normal",
        "Sensor Data: sensor humidity 52 Normal", "Sensor Data: sensor humidity 38 Normal",
        "Sensor Data: sensor humidity 67 High", "Sensor Data: sensor humidity 41 Normal",
        "Sensor Data: sensor pressure 1013.2 Normal", "Sensor Data: sensor pressure 1015.8 High",
        "Sensor Data: sensor pressure 1012.1 Normal",
        "Weather Data: temp 18.5C / 65.3F", "Weather Data: temp 26.2C / 79.2F",
        "Weather Data: humidity 35%", "Weather Data: humidity 75%",
    ])


@pytest.mark.parametrize("mode", MODES)
def test_batch_sources_that_stop_by_themselves(mode):
    lines = run_app("batch_sources", mode)
    assert sorted(lines[:-1]) == sorted(
        [f"countdown {n}" for n in range(4)] + ["letter a", "letter b"]
        + [f"square {i * i}" for i in range(1, 6)])
    assert lines[-1] == "done 11"


@pytest.mark.parametrize("mode", MODES)
def test_the_readme_pipeline_runs_and_counts_right(mode, tmp_path):
    readme_path = Path(__file__).parent.parent / "README.md"
    if not readme_path.exists():
        pytest.skip("README.md is not beside the tests here (the Docker test image)")
    readme = readme_path.read_text()
    section = readme[readme.index("## Pipelines"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")].replace('mode="process"', f'mode="{mode}"')
    script = tmp_path / "readme_pipeline.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts = collections.Counter("to be or not to be that is the question".split())
    assert sorted(done.stdout.splitlines()) == sorted(
        f"count: {(word, n)!r}" for word, n in counts.items())
