"""The `sage` command, run as a user runs it: every subcommand and option, `--json` parsed."""

import json
import subprocess
import sys

import pytest

from conftest import native_available, requires_native, requires_ray


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


def test_bench_runs_python_queue_beside_queue_queue():
    result = sage("bench", "--backend", "python_queue", "--items", "2000")
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["placement", "queue", "batch", "how", "items", "items/s", "vs",
                                "the", "alternative"]
    rows = [line.split() for line in lines[1:6]]
    assert [tuple(r[:4]) for r in rows] == [
        ("threads", "python_queue", "1", "per"), ("threads", "queue.Queue", "1", "per"),
        ("threads", "python_queue", "64", "put_many"), ("threads", "python_queue", "64", "list"),
        ("threads", "queue.Queue", "64", "list")]
    assert rows[0][-1] == "queue.Queue" and rows[0][-2].endswith("x")
    assert " ".join(rows[2][-5:]) == "queue.Queue (a list per put)"


def test_queue_refuses_without_the_native_module_and_says_how_to_get_it(monkeypatch, capsys):
    # On the minimal profile this is the real state; on full, the module is hidden.
    from sage import cli
    from sage.utils import queue_adapter

    monkeypatch.setattr(queue_adapter, "is_sage_queue_available", lambda: False)
    assert cli.main(["queue", "list"]) == 2
    err = capsys.readouterr().err
    from sage.utils.install_hint import native_build_hint

    assert "`sage queue`" in err and native_build_hint() in err, err


def test_demo_runs_its_pipeline_and_checks_the_counts(capsys):
    from sage import cli

    assert cli.main(["demo", "--mode", "thread", "--lines", "2000"]) == 0
    out = capsys.readouterr().out
    assert "the counts match a one-process count" in out, out


# -- the version and the top level -------------------------------------------------------------

def _toml(path):
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def test_version_prints_the_package_version():
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    result = sage("--version")
    assert result.returncode == 0, result.stderr
    import sage as package

    assert result.stdout.strip() == f"sage {package.__version__}"
    if pyproject.is_file():  # a checkout (tox runs the tests beside a wheel, from the tree)
        assert package.__version__ == _toml(pyproject)["project"]["version"]


def test_license_file_matches_the_license_metadata():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "LICENSE").is_file():
        pytest.skip("LICENSE is not beside the tests here (the Docker test image)")
    project = _toml(root / "pyproject.toml")["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (root / "LICENSE").read_text()  # setuptools ships LICENSE* in the wheel by default
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


@pytest.mark.parametrize("args", [[], ["queue"], ["queue", "frobnicate"], ["bench", "--items", "0"],
                                  ["bench", "--placement", "gpu"], ["queue", "cleanup", "--min-age", "-1"]])
def test_usage_errors_exit_2(args):
    assert sage(*args).returncode == 2


# -- sage queue: each command acts on exactly what it names ------------------------------------

@pytest.fixture
def parked(queue_name):
    """Persistent sage_queues with no process attached: 'persistent, unused' segments."""
    from sage_ext.sage_queue.python import sage_queue_manager
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    names = []

    def park(items=()):
        name = f"{queue_name}-{len(names)}"
        q = SageQueue(name, persistent=True)
        q.put_many(list(items)) if items else None
        q.detach()
        names.append(name)
        return name

    yield park
    for name in names:
        try:
            sage_queue_manager.remove(name)
        except FileNotFoundError:
            pass


def _json(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@requires_native
def test_queue_list_names_only_what_it_is_given(parked):
    a, b = parked([1, 2]), parked()
    listed = _json(sage("queue", "list", a, "--json"))
    assert [(e["name"], e["items"], e["persistent"]) for e in listed] == [(a, 2, True)]
    both = {e["name"] for e in _json(sage("queue", "list", a, b, "--json"))}
    assert both == {a, b}
    table = sage("queue", "list", b)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["NAME", "SIZE"]
    assert b in table.stdout and a not in table.stdout
    missing = sage("queue", "list", a + "-none")
    assert missing.returncode == 0 and "no sage_queue segment named" in missing.stdout


@requires_native
def test_queue_inspect_json_describes_the_queue(parked):
    a = parked([1, 2, 3])
    d = _json(sage("queue", "inspect", a, "--json"))
    assert (d["name"], d["items"], d["persistent"], d["mode"]) == (a, 3, True, 0o600)
    text = sage("queue", "inspect", a)
    assert text.returncode == 0 and f"Queue '{a}'" in text.stdout
    assert sage("queue", "inspect", a + "-none").returncode == 1


@requires_native
def test_queue_cleanup_acts_on_exactly_the_named_queues(parked):
    import os

    from conftest import segment_file

    a, b = parked(), parked()
    kept = _json(sage("queue", "cleanup", a, "--min-age", "0", "--json"))
    assert kept["removed"] == [] and kept["kept"]["need_force"] == [a]  # persistent: only --force
    dry = _json(sage("queue", "cleanup", "--force", "--dry-run", "--min-age", "0", a, "--json"))
    assert dry == dict(dry_run=True, removed=[a], failed={}, missing=[],
                       kept=dict(in_use=[], need_force=[], too_young=[], another_users=[]))
    assert os.path.exists(segment_file(a))
    # the form .ci/run uses: options first, then the names
    done = sage("queue", "cleanup", "--force", "--min-age", "0", a)
    assert done.returncode == 0 and f"removed {a}" in done.stdout
    assert not os.path.exists(segment_file(a)) and os.path.exists(segment_file(b))
    gone = sage("queue", "cleanup", "--force", "--min-age", "0", a)
    assert f"no queue named '{a}'" in gone.stdout


@requires_native
def test_queue_cleanup_keeps_a_queue_younger_than_min_age(parked):
    a = parked()
    result = _json(sage("queue", "cleanup", "--force", "--min-age", "3600", a, "--json"))
    assert result["removed"] == [] and result["kept"]["too_young"] == [a]


@requires_native
def test_queue_remove_removes_that_queue_and_says_so_when_it_is_missing(parked):
    a, b = parked(), parked()
    removed = sage("queue", "remove", a)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed {a}"
    assert [e["name"] for e in _json(sage("queue", "list", a, b, "--json"))] == [b]
    again = sage("queue", "remove", a)
    assert again.returncode == 1 and f"no queue named '{a}'" in again.stderr


@requires_native
def test_a_name_no_queue_can_have_is_an_error_not_an_empty_answer():
    for args in (["list", "../etc"], ["cleanup", "a/b"]):
        result = sage("queue", *args)
        assert result.returncode == 2 and "error:" in result.stderr, result.stderr


@requires_native
def test_the_managers_own_command_line_takes_the_same_commands(parked):
    a = parked([7])
    r = subprocess.run([sys.executable, "-m", "sage_ext.sage_queue.python.sage_queue_manager",
                        "inspect", a, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"] == 1


# -- sage bench ------------------------------------------------------------------------------

def test_bench_json_has_each_backend_beside_its_alternative():
    results = _json(sage("bench", "--placement", "threads", "--items", "4000", "--batch", "8",
                         "--json"))
    assert [(r["queue"], r["ours"], r["batch"], r["how"]) for r in results] == [
        ("python_queue", True, 8, "put_many"), ("python_queue", True, 8, "list"),
        ("queue.Queue", False, 8, "list")]
    *ours, other = results
    assert other["items_per_s"] > 0 and "ratio" not in other
    for row in ours:
        assert row["versus"] == "queue.Queue (a list per put)"
        assert abs(row["ratio"] - row["items_per_s"] / other["items_per_s"]) < 0.01


@requires_native
def test_bench_processes_compares_sage_queue_with_multiprocessing_queue():
    results = _json(sage("bench", "--backend", "sage", "--items", "4000", "--batch", "1", "--json"))
    assert [(r["placement"], r["queue"]) for r in results] == [
        ("processes", "sage_queue"), ("processes", "multiprocessing.Queue")]
    assert all(r["items_per_s"] > 0 for r in results)


def test_bench_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "bench.png"
    result = sage("bench", "--placement", "threads", "--items", "2000", "--plot", str(chart))
    assert result.returncode == 0, result.stderr
    assert f"chart: {chart}" in result.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib_names_the_pip_command_and_runs_nothing(tmp_path):
    import os

    from conftest import child_env

    hidden = tmp_path / "hide"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hidden), env["PYTHONPATH"]])
    result = sage("bench", "--placement", "threads", "--plot", str(tmp_path / "x.png"), env=env)
    assert result.returncode == 2
    assert "matplotlib, which is not installed" in result.stderr and "pip install" in result.stderr
    assert result.stdout == "" and not (tmp_path / "x.png").exists()


@requires_ray
def test_bench_on_ray_keeps_rays_start_up_lines_out_unless_verbose():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    quiet = sage("bench", "--placement", "ray", "--items", "640", "--ray-items", "40",
                 "--batch", "1", "--batch", "64", "--json", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    rows = json.loads(quiet.stdout)
    assert [(r["queue"], r["batch"], r["how"], r["items"]) for r in rows] == [
        ("ray_queue", 1, "per item", 40), ("ray.util.queue.Queue", 1, "per item", 40),
        ("ray_queue", 64, "put_many", 640), ("ray_queue", 64, "list", 640),
        ("ray.util.queue.Queue", 64, "list", 640)]
    assert rows[0]["versus"] == "ray.util.queue.Queue"
    for verbose in (["--verbose", "bench"], ["bench", "--verbose"]):
        loud = sage(*verbose, "--placement", "ray", "--items", "640", "--batch", "64", env=env)
        assert loud.returncode == 0, loud.stderr
        assert "Started a local Ray instance" in loud.stderr + loud.stdout
