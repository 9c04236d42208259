"""The `sage` command: info, queue list/inspect, bench, on the installed profile."""

import json
import subprocess
import sys

from conftest import native_available, requires_native


def sage(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sage", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_info_json_reports_current_backend_and_every_backend():
    result = sage("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info["backends"]) == {"sage_queue", "ray_queue", "python_queue"}
    assert info["native_extension"]["available"] is native_available()


def test_info_follows_the_environment_variable():
    import os

    env = dict(os.environ, SAGE_QUEUE_BACKEND="python")
    result = sage("info", env=env)
    assert result.returncode == 0
    assert "current backend : python_queue" in result.stdout
    assert "env SAGE_QUEUE_BACKEND" in result.stdout


def test_bad_environment_value_is_a_clear_error_and_exit_2():
    import os

    result = sage("info", env=dict(os.environ, SAGE_QUEUE_BACKEND="bogus"))
    assert result.returncode == 2
    assert "SAGE_QUEUE_BACKEND" in result.stderr and "valid values" in result.stderr


@requires_native
def test_queue_list_and_inspect_show_a_live_queue(make_queue):
    q = make_queue()
    q.put_many([1, 2, 3])
    listed = sage("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert q.name in listed.stdout
    inspected = sage("queue", "inspect", q.name)
    assert inspected.returncode == 0, inspected.stderr
    assert q.name in inspected.stdout


def test_bench_runs_python_queue_side_by_side():
    result = sage("bench", "--backend", "python_queue", "--items", "2000")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "python_queue" in result.stdout and "items/s" in result.stdout


def test_queue_refuses_without_the_native_module_and_says_how_to_get_it(monkeypatch, capsys):
    # On the minimal profile this is the real state; on full, the module is hidden.
    from sage import cli
    from sage.utils import queue_adapter

    monkeypatch.setattr(queue_adapter, "is_sage_queue_available", lambda: False)
    assert cli.main(["queue", "list"]) == 2
    err = capsys.readouterr().err
    assert "`sage queue`" in err and "python install.py --full" in err, err


def test_demo_runs_its_pipeline_and_checks_the_counts(capsys):
    from sage import cli

    assert cli.main(["demo", "--mode", "thread", "--lines", "2000"]) == 0
    out = capsys.readouterr().out
    assert "the counts match a one-process count" in out, out
