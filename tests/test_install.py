"""install.py, run for real: venvs, pip, the CMake build, the self-check.

Each test installs from its own copy of the repo tree (no .venv, build, .git or
*.so): the install is editable, and tests that change sources must not change
another test's. A copy also proves that a fresh checkout installs. The native
module of --full lives in its venv (<venv>/sage-native), never in the tree.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(
    ".venv*", "build", "dist", ".git", ".tox", ".pytest_cache", ".hypothesis",
    "__pycache__", "*.egg-info", "*.so",
)
NATIVE_IMPORT = "import sage_ext.sage_queue.python.sage_queue"

# Run in the venv's python: a spawned child attaches by name and puts, the parent gets.
CROSS_PROCESS_SCRIPT = """
import multiprocessing
from sage_ext.sage_queue.python.sage_queue import SageQueue

ITEM = {"n": 42, "blob": bytes(range(256)) * 400}

def produce(name):
    q = SageQueue.open(name)
    q.put(ITEM)
    q.detach()

if __name__ == "__main__":
    q = SageQueue.create()
    child = multiprocessing.get_context("spawn").Process(target=produce, args=(q.name,))
    child.start()
    got = q.get(timeout=60)
    child.join(60)
    q.destroy()
    assert got == ITEM, "item changed in transit"
    assert child.exitcode == 0, child.exitcode
    print("moved item", got["n"])
"""


def copy_repo(dest: Path) -> Path:
    shutil.copytree(REPO, dest, ignore=COPY_IGNORE)
    return dest


def run_install(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the copy's install.py with the bare python running the tests; output in .output."""
    proc = subprocess.run(
        [sys.executable, str(repo / "install.py"), *args],
        capture_output=True, text=True, cwd=repo, stdin=subprocess.DEVNULL, timeout=800,
        env={**os.environ, **(env or {})},
    )
    proc.output = proc.stdout + proc.stderr
    return proc


def run_in_venv(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # -I: only the venv's packages count, not the current directory or PYTHONPATH.
    return subprocess.run([str(venv / "bin" / "python"), "-I", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def read_profile(venv: Path) -> dict:
    return json.loads((venv / "sage-profile.json").read_text())


def native_modules(venv: Path) -> list[Path]:
    """The venv's own build of the native module."""
    return sorted((venv / "sage-native").glob("_native*.so"))


def tree_native_modules(repo: Path) -> list[Path]:
    return sorted((repo / "sage_ext" / "sage_queue" / "python").glob("_native*.so"))


@pytest.fixture(scope="session")
def full_install(tmp_path_factory) -> dict:
    """One `--full --no-ray` install shared by the tests (and by pytest-xdist workers)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "full-install"
    with open(shared / "full-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker installs, the others wait and reuse
        result_file = root / "result.json"
        if not result_file.exists():
            root.mkdir(exist_ok=True)
            repo, venv = copy_repo(root / "repo"), root / "venv"
            started = time.monotonic()
            proc = run_install(repo, "--full", "--no-ray", "--venv", str(venv))
            result_file.write_text(json.dumps({
                "repo": str(repo), "venv": str(venv), "returncode": proc.returncode,
                "output": proc.output, "seconds": time.monotonic() - started,
            }))
    result = json.loads(result_file.read_text())
    result["repo"], result["venv"] = Path(result["repo"]), Path(result["venv"])
    assert result["returncode"] == 0, result["output"]
    return result


def test_full_install_builds_a_native_queue_that_moves_items_across_processes(full_install, tmp_path):
    venv, repo = full_install["venv"], full_install["repo"]
    assert "sage_queue  built; put/get across two processes ok" in full_install["output"]
    profile = read_profile(venv)
    assert profile["profile"] == "full"
    assert profile["queue_backend"] == "sage"
    assert profile["native_built"] is True
    assert native_modules(venv), "no _native*.so built in the venv"
    assert tree_native_modules(repo) == [], "the native module belongs in the venv, not the tree"

    script = tmp_path / "cross_process.py"
    script.write_text(CROSS_PROCESS_SCRIPT)
    moved = run_in_venv(venv, str(script), cwd=tmp_path)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "moved item 42" in moved.stdout


def test_second_identical_full_run_says_nothing_to_do_and_skips_pip(full_install):
    venv, repo = full_install["venv"], full_install["repo"]
    log, so = venv / "sage-install.log", native_modules(venv)[0]
    before = (log.stat().st_mtime_ns, so.stat().st_mtime_ns, read_profile(venv))

    proc = run_install(repo, "--full", "--no-ray", "--venv", str(venv))

    assert proc.returncode == 0, proc.output
    assert "already installed: full; nothing to do" in proc.stdout
    assert (log.stat().st_mtime_ns, so.stat().st_mtime_ns, read_profile(venv)) == before


# Run in the venv: what create_queue() gives with nothing but the recorded profile.
DEFAULT_QUEUE_SCRIPT = """
import json, os
from sage.utils import create_queue, get_queue_backend_info
q = create_queue()
q.put("x")
assert q.get(timeout=60) == "x"
print(json.dumps({"type": type(q).__name__, "current": get_queue_backend_info()["current_backend"]}))
getattr(q, "destroy", q.close)()
"""


def default_queue(venv: Path, cwd: Path, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGE_QUEUE_")}
    proc = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", DEFAULT_QUEUE_SCRIPT],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_full_profile_makes_sage_queue_the_default_and_the_env_overrides_it(full_install, tmp_path):
    venv = full_install["venv"]
    assert default_queue(venv, tmp_path) == {"type": "SageQueue", "current": "sage_queue"}
    assert default_queue(venv, tmp_path, SAGE_QUEUE_BACKEND="python") == {
        "type": "PythonQueue", "current": "python_queue"}
    info = subprocess.run([str(venv / "bin" / "sage"), "info", "--json"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["current_backend"] == "sage_queue"
    assert json.loads(info.stdout)["profile"] == "full"


def test_minimal_profile_with_ray_makes_ray_queue_the_default(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    proc = run_install(repo, "--minimal", "--venv", str(venv))
    assert proc.returncode == 0, proc.output
    assert default_queue(venv, tmp_path) == {"type": "RayQueue", "current": "ray_queue"}
    info = subprocess.run([str(venv / "bin" / "sage"), "info"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "current backend : ray_queue" in info.stdout


def test_check_reports_the_full_profile_and_exits_zero(full_install):
    proc = run_install(full_install["repo"], "--check", "--venv", str(full_install["venv"]))
    assert proc.returncode == 0, proc.output
    assert "profile     full (default queue backend sage_queue" in proc.stdout
    assert "sage_queue  built" in proc.stdout
    assert "ok: full profile works" in proc.stdout


@pytest.mark.parametrize("breakage", ["source-does-not-compile", "cxx-is-not-a-compiler"])
def test_failing_native_build_exits_nonzero_with_the_compilers_message(breakage, tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    env = {}
    if breakage == "source-does-not-compile":
        with open(repo / "sage_ext" / "sage_queue" / "src" / "shm_queue.cpp", "a") as source:
            source.write("\n#error deliberately broken by test_install\n")
        expected = ["error: #error deliberately broken by test_install"]
    else:  # CMake's own compiler check fails on it
        env["CXX"] = "/bin/false"
        expected = ["CMake Error", 'The C++ compiler "/bin/false" is not able to compile']

    proc = run_install(repo, "--full", "--no-ray", "--venv", str(venv), env=env)

    assert proc.returncode == 1, proc.output
    for text in expected:
        assert text in proc.stderr, proc.output
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("install.py: error: the native build of sage_queue failed"), summary
    assert expected[0] in summary, "the one-line summary should name the first error"
    assert not (venv / "sage-profile.json").exists(), "a failed install must not record a profile"


def test_minimal_install_records_minimal_and_cannot_import_the_native_module(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"

    proc = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))

    assert proc.returncode == 0, proc.output
    assert "sage_queue  not built (minimal profile)" in proc.stdout
    profile = read_profile(venv)
    assert (profile["profile"], profile["queue_backend"], profile["native_built"]) == ("minimal", "ray", False)
    assert run_in_venv(venv, "-c", "import sage, sage_ext", cwd=tmp_path).returncode == 0
    native = run_in_venv(venv, "-c", NATIVE_IMPORT, cwd=tmp_path)
    assert native.returncode != 0
    assert "ImportError: the native sage_queue extension is not built" in native.stderr
    # No Ray either: the profile's ray_queue is an error with the fix, never a silent substitute.
    explicit = run_in_venv(venv, "-c", "from sage.utils import create_queue; create_queue()", cwd=tmp_path)
    assert explicit.returncode != 0
    assert "BackendUnavailableError: queue backend 'ray_queue' is not installed" in explicit.stderr


def test_switching_full_to_minimal_reinstalls_and_removes_the_stale_native_module(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    full = run_install(repo, "--full", "--no-ray", "--venv", str(venv))
    assert full.returncode == 0, full.output
    assert native_modules(venv)

    minimal = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))

    assert minimal.returncode == 0, minimal.output
    assert "profile full -> minimal" in minimal.stdout
    assert "removed this venv's native module" in minimal.stdout
    assert native_modules(venv) == [] and not (venv / "sage-native").exists()
    assert read_profile(venv)["profile"] == "minimal"
    assert run_in_venv(venv, "-c", NATIVE_IMPORT, cwd=tmp_path).returncode != 0
    check = run_install(repo, "--check", "--venv", str(venv))
    assert check.returncode == 0, check.output
    assert "ok: minimal profile works" in check.stdout


def test_full_without_a_compiler_exits_2_with_the_fix_and_creates_nothing(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    proc = subprocess.run(
        [sys.executable, str(repo / "install.py"), "--full", "--venv", str(venv)],
        capture_output=True, text=True, env={**env, "PATH": str(empty_bin)}, timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no C++ compiler found: install one (apt-get install g++) or use --minimal" in proc.stderr
    assert not venv.exists()


def test_check_with_nothing_installed_exits_3(tmp_path):
    proc = run_install(REPO, "--check", "--venv", str(tmp_path / "no-venv"))
    assert proc.returncode == 3, proc.output
    assert "nothing installed" in proc.stdout


# -- reinstalls, broken installs, bad arguments ----------------------------------------------

def test_reinstall_after_a_native_source_change_rebuilds_the_module(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    first = run_install(repo, "--full", "--no-ray", "--venv", str(venv))
    assert first.returncode == 0, first.output
    [so] = native_modules(venv)
    built = so.stat().st_mtime_ns
    with open(repo / "sage_ext" / "sage_queue" / "src" / "shm_queue.cpp", "a") as source:
        source.write("\n// changed by test_install: the next --full must rebuild\n")
    check = run_install(repo, "--check", "--venv", str(venv))
    assert "sources changed since the install: run `python install.py --full`" in check.stdout

    second = run_install(repo, "--full", "--no-ray", "--venv", str(venv))

    assert second.returncode == 0, second.output
    assert "changing the install in" in second.stdout
    assert "native sources or packaging files changed" in second.stdout
    assert "sage_queue  built; put/get across two processes ok" in second.stdout
    [so] = native_modules(venv)
    assert so.stat().st_mtime_ns > built
    third = run_install(repo, "--full", "--no-ray", "--venv", str(venv))
    assert "already installed: full; nothing to do" in third.stdout


def test_check_of_a_broken_install_says_what_is_wrong_and_a_rerun_repairs_it(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    assert run_install(repo, "--minimal", "--no-ray", "--venv", str(venv)).returncode == 0
    # a packaging change is a reinstall; a Python source change is not (the install is editable)
    (repo / "sage" / "utils" / "queue_tool.py").write_text(
        (repo / "sage" / "utils" / "queue_tool.py").read_text() + "\n# changed by test_install\n")
    same = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))
    assert "already installed: minimal; nothing to do" in same.stdout, same.output
    uninstall = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y",
                                "sage-queue"], capture_output=True, text=True, timeout=300)
    assert uninstall.returncode == 0, uninstall.stdout + uninstall.stderr

    check = run_install(repo, "--check", "--venv", str(venv))

    assert check.returncode == 1, check.output
    assert "the sage package does not import" in check.stdout
    assert "the recorded minimal profile does not work: run `python install.py --minimal`" in check.stdout
    repaired = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))
    assert repaired.returncode == 0, repaired.output
    assert "does not work" in repaired.stdout and "installing again" in repaired.stdout
    assert run_install(repo, "--check", "--venv", str(venv)).returncode == 0


def test_a_packaging_change_reinstalls(tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    assert run_install(repo, "--minimal", "--no-ray", "--venv", str(venv)).returncode == 0
    with open(repo / "pyproject.toml", "a") as pyproject:
        pyproject.write("\n# changed by test_install\n")

    again = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))

    assert again.returncode == 0, again.output
    assert "native sources or packaging files changed" in again.stdout
    assert "installed: minimal in" in again.stdout


def test_venv_at_a_directory_that_is_not_a_venv_exits_2_and_leaves_it_alone(tmp_path):
    target = tmp_path / "not-a-venv"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    proc = run_install(REPO, "--minimal", "--no-ray", "--venv", str(target))

    assert proc.returncode == 2, proc.output
    assert f"install.py: error: {target} exists and is not a virtual environment: remove it or " \
           "choose another --venv" in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"


def test_cxx_that_names_no_executable_exits_2_before_creating_anything(tmp_path):
    venv = tmp_path / "venv"
    proc = run_install(REPO, "--full", "--no-ray", "--venv", str(venv),
                       env={"CXX": "no-such-compiler-here"})
    assert proc.returncode == 2, proc.output
    assert "CXX='no-such-compiler-here' is not an executable: fix CXX or unset it" in proc.stderr
    assert not venv.exists()


def _works(repo: Path, venv: Path, profile: str, tmp_path: Path) -> None:
    """--check of the venv says it works, and the native module imports exactly for full."""
    check = run_install(repo, "--check", "--venv", str(venv))
    assert check.returncode == 0, check.output
    assert f"ok: {profile} profile works" in check.stdout
    native = run_in_venv(venv, "-c", NATIVE_IMPORT, cwd=tmp_path)
    assert (native.returncode == 0) == (profile == "full"), native.stderr


def test_two_venvs_of_different_profiles_on_one_checkout_keep_working_in_any_order(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    full_venv, minimal_venv = tmp_path / "full", tmp_path / "minimal"
    assert run_install(repo, "--minimal", "--no-ray", "--venv", str(minimal_venv)).returncode == 0
    full = run_install(repo, "--full", "--no-ray", "--venv", str(full_venv))
    assert full.returncode == 0, full.output
    _works(repo, minimal_venv, "minimal", tmp_path)  # the full build did not reach it

    with open(repo / "pyproject.toml", "a") as pyproject:  # both are out of date now
        pyproject.write("\n# changed by test_install\n")
    again = run_install(repo, "--minimal", "--no-ray", "--venv", str(minimal_venv))
    assert again.returncode == 0 and "packaging files changed" in again.stdout, again.output
    _works(repo, full_venv, "full", tmp_path)  # the minimal install took nothing from it
    _works(repo, minimal_venv, "minimal", tmp_path)

    rebuilt = run_install(repo, "--full", "--no-ray", "--venv", str(full_venv))
    assert rebuilt.returncode == 0, rebuilt.output
    _works(repo, full_venv, "full", tmp_path)
    _works(repo, minimal_venv, "minimal", tmp_path)
    assert tree_native_modules(repo) == []


def test_a_native_module_left_in_the_tree_is_removed_and_check_tells_the_truth_meanwhile(
        full_install, tmp_path):
    repo, venv = copy_repo(tmp_path / "repo"), tmp_path / "venv"
    assert run_install(repo, "--minimal", "--no-ray", "--venv", str(venv)).returncode == 0
    # an install from before the move left its module in the tree: a minimal venv imports it
    [built] = native_modules(full_install["venv"])
    stray = repo / "sage_ext" / "sage_queue" / "python" / built.name
    shutil.copy2(built, stray)

    check = run_install(repo, "--check", "--venv", str(venv))

    assert check.returncode == 1, check.output
    assert "the native module imports in a minimal profile" in check.stdout
    repaired = run_install(repo, "--minimal", "--no-ray", "--venv", str(venv))
    assert repaired.returncode == 0, repaired.output
    assert "from the source tree" in repaired.stdout and not stray.exists()
    _works(repo, venv, "minimal", tmp_path)
