#!/usr/bin/env python3
"""Set up a SAGE profile in a virtual environment.

    python install.py --minimal   # the package + Ray; default queue backend ray_queue
    python install.py --full      # minimal + the native sage_queue (CMake); default sage_queue
    python install.py --check     # report what is installed and whether it works; change nothing

Options: --venv PATH (default .venv at the repo root), --dev (test and dev tools),
--no-ray (skip the ~260 MB Ray download), --quiet.

The package is installed editable from this tree, so the repo's tests run against
it. The native module of --full is built into the venv (<venv>/sage-native/_native*.so,
where the package looks first), never into the tree: venvs of different profiles made
from one checkout keep working whatever order they are installed in. The profile is
recorded in <venv>/sage-profile.json, which the queue layer reads from sys.prefix. A
second identical run changes nothing.

Exit codes: 0 done (or nothing to do), 1 the install or its self-check failed,
2 a prerequisite is missing (compiler, CMake, venv support), 3 --check found no install.

Standard library only: this runs on a bare Python 3.10+.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
NATIVE_DIR = REPO / "sage_ext" / "sage_queue"
NATIVE_MODULE_DIR = NATIVE_DIR / "python"  # where a wheel (or an in-place build) has it
NATIVE_MODULE_GLOB = "_native*.so"
# <venv>/sage-native: where --full builds the module; sage_ext/sage_queue/python/__init__.py
# puts <sys.prefix>/sage-native first on the package's path.
VENV_NATIVE_DIR = "sage-native"
NATIVE_SOURCES = ("CMakeLists.txt", "include", "src", "bindings")
PACKAGING_FILES = ("pyproject.toml", "setup.py")

PROFILE_FILE = "sage-profile.json"
INSTALL_LOG = "sage-install.log"
PROFILES = {  # profile -> default queue backend, whether the native module is built
    "minimal": {"queue_backend": "ray", "native": False},
    "full": {"queue_backend": "sage", "native": True},
}
MIN_CMAKE = (3, 18)
BUILD_TOOLS = {"setuptools": "64", "wheel": "0", "pybind11": "2.13"}  # name -> minimum version
CXX_CANDIDATES = ("c++", "g++", "clang++")

EXIT_OK, EXIT_FAILED, EXIT_PREREQUISITE, EXIT_NOT_INSTALLED = 0, 1, 2, 3


class InstallError(Exception):
    """A step failed: ``summary`` is the one-line reason, ``details`` the tool output behind it."""

    def __init__(self, summary: str, details: str = "", code: int = EXIT_FAILED):
        super().__init__(summary)
        self.summary = summary
        self.details = details
        self.code = code


class Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def step(self, message: str) -> None:
        if not self.quiet:
            print(f"-- {message}", flush=True)

    def always(self, message: str) -> None:
        print(message, flush=True)


# -- arguments -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install a SAGE profile into a virtual environment.",
        epilog="exit codes: 0 ok, 1 install or self-check failed, 2 missing prerequisite, "
        "3 --check found nothing installed",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--minimal", action="store_true", help="the package + Ray (default backend ray)")
    mode.add_argument("--full", action="store_true",
                      help="minimal + the native sage_queue built with CMake (default backend sage)")
    mode.add_argument("--check", action="store_true",
                      help="report the installed profile and the working backends; change nothing")
    # Run by install.py itself inside the venv's python; not for users.
    parser.add_argument("--venv", default=str(REPO / ".venv"),
                        help="virtual environment to create or reuse (default: %(default)s)")
    parser.add_argument("--dev", action="store_true",
                        help="also install the test, dev and plot extras (pytest, pytest-xdist, "
                             "tox, ..., matplotlib for `sage bench --plot`)")
    parser.add_argument("--no-ray", action="store_true",
                        help="skip the ray extra (~260 MB); the ray_queue backend is then unavailable")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the outcome")
    args = parser.parse_args(argv)
    if args.check and (args.dev or args.no_ray):
        parser.error("--dev and --no-ray choose what to install; --check installs nothing")
    args.profile = "full" if args.full else "minimal" if args.minimal else None
    args.venv = Path(args.venv).expanduser().absolute()
    return args


# -- what is wanted, what is recorded ----------------------------------------------------


def inputs_digest(native: bool) -> str:
    """Hash of the files an install depends on: packaging always, native sources for full."""
    paths = [REPO / name for name in PACKAGING_FILES]
    if native:
        for name in NATIVE_SOURCES:
            top = NATIVE_DIR / name
            paths.extend(sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top])
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def wanted_install(args: argparse.Namespace) -> dict:
    """The parts of a record that decide whether an install is up to date."""
    return {
        "profile": args.profile,
        "options": {"dev": args.dev, "ray": not args.no_ray},
        "source": str(REPO),
        "inputs_sha256": inputs_digest(PROFILES[args.profile]["native"]),
        "native_dir": str(native_dir(args.venv)) if PROFILES[args.profile]["native"] else None,
    }


def read_record(venv: Path) -> dict | None:
    try:
        return json.loads((venv / PROFILE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_record(venv: Path, record: dict) -> None:
    # Write then rename, so a reader never sees half a file.
    tmp = venv / (PROFILE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, venv / PROFILE_FILE)


def differences(recorded: dict, wanted: dict) -> list[str]:
    """What changed since the recorded install, in words; empty when it is up to date."""
    changes = []
    if recorded.get("profile") != wanted["profile"]:
        changes.append(f"profile {recorded.get('profile')} -> {wanted['profile']}")
        return changes  # a new profile re-installs anyway: the rest is noise
    old, new = recorded.get("options", {}), wanted["options"]
    words = {True: "on", False: "off", None: "unset"}
    changes += [f"{key} {words[old.get(key)]} -> {words[new[key]]}"
                for key in new if old.get(key) != new[key]]
    if recorded.get("native_dir") != wanted["native_dir"]:  # an install from before the move
        changes.append(f"the native module moves into the venv ({wanted['native_dir']})")
    if recorded.get("source") != wanted["source"]:
        changes.append(f"source tree {recorded.get('source')} -> {wanted['source']}")
    elif recorded.get("inputs_sha256") != wanted["inputs_sha256"]:
        changes.append("native sources or packaging files changed")
    return changes


# -- prerequisites -------------------------------------------------------------------------


def find_cxx_compiler() -> str:
    cxx = os.environ.get("CXX", "").strip()
    if cxx:  # CMake obeys $CXX, so a bad one must be reported as such
        found = shutil.which(shlex.split(cxx)[0])
        if not found:
            raise InstallError(f"CXX={cxx!r} is not an executable: fix CXX or unset it",
                               code=EXIT_PREREQUISITE)
        return found
    for name in CXX_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise InstallError("no C++ compiler found: install one (apt-get install g++) or use --minimal",
                       code=EXIT_PREREQUISITE)


def version_tuple(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def cmake_version(executable: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"cmake version (\S+)", out)
    return version_tuple(match.group(1)) if match else ()


def usable_cmake(venv: Path) -> str | None:
    """A CMake >= MIN_CMAKE that setup.py will find (the venv's bin comes first on its PATH)."""
    found = shutil.which("cmake", path=build_env(venv, native=True)["PATH"])
    return found if found and cmake_version(found) >= MIN_CMAKE else None


# -- the virtual environment -----------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def python_version(python: Path) -> str | None:
    """The interpreter's version, or None if it does not run."""
    try:
        proc = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_venv(venv: Path, log: Log) -> str:
    """Create the venv, or reuse it if its python runs; return that python's version."""
    clear = False
    if venv.exists():
        version = python_version(venv_python(venv))
        if version:
            log.step(f"reusing venv {venv} (python {version})")
            ensure_pip(venv, log)
            return version
        if not (venv / "pyvenv.cfg").exists() and any(venv.iterdir()):
            raise InstallError(f"{venv} exists and is not a virtual environment: "
                               "remove it or choose another --venv", code=EXIT_PREREQUISITE)
        log.step(f"re-creating venv {venv}: its python does not run")
        clear = True
    else:
        log.step(f"creating venv {venv} with python {platform.python_version()}")
    cmd = [sys.executable, "-m", "venv", *(["--clear"] if clear else []), str(venv)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    version = python_version(venv_python(venv)) if proc.returncode == 0 else None
    if not version:
        raise InstallError(
            f"could not create the venv {venv}: install venv support "
            f"(apt-get install python3-venv) or pass --venv to a writable place",
            details=proc.stdout + proc.stderr, code=EXIT_PREREQUISITE)
    return version


def ensure_pip(venv: Path, log: Log) -> None:
    py = str(venv_python(venv))
    if subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return
    log.step("the venv has no pip: adding the bundled one (ensurepip)")
    proc = subprocess.run([py, "-m", "ensurepip"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"the venv {venv} has no pip and ensurepip failed: "
                           "remove the venv and run again", details=proc.stdout + proc.stderr)


def installed_versions(venv: Path, names: list[str]) -> dict[str, str | None]:
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(n):\n"
            "    try: return m.version(n)\n"
            "    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    proc = subprocess.run([str(venv_python(venv)), "-c", code, *names], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"the venv's python cannot list its packages: remove {venv} and run again",
                           details=proc.stdout + proc.stderr)
    return json.loads(proc.stdout)


# -- pip -------------------------------------------------------------------------------------------


def build_env(venv: Path, native: bool) -> dict[str, str]:
    """The environment pip runs in: the venv activated, the native build switched on or off."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv)
    # setup.py looks for cmake on PATH first: the venv's (from PyPI) must win over an old system one.
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    if native:
        env["SAGE_BUILD_NATIVE"] = "1"
        env["SAGE_NATIVE_DIR"] = str(native_dir(venv))  # setup.py writes the module there
    else:  # a stray SAGE_BUILD_NATIVE=1 in the caller's shell must not turn minimal into full
        env.pop("SAGE_BUILD_NATIVE", None)
        env.pop("SAGE_NATIVE_DIR", None)
    return env


def run_pip(venv: Path, pip_args: list[str], native: bool) -> tuple[int, str]:
    """Run pip in the venv, appending its output to the install log; return (exit code, output)."""
    cmd = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *pip_args]
    log_path = venv / INSTALL_LOG
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log_file:
        log_file.write(f"\n$ {shlex.join(cmd)}\n")
        log_file.flush()
        code = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=build_env(venv, native)).returncode
    with open(log_path) as log_file:
        log_file.seek(start)
        return code, log_file.read()


def ensure_build_tools(venv: Path, native: bool, log: Log) -> None:
    """Install the build tools the venv lacks (or has too old); upgrade nothing else."""
    wanted = dict(BUILD_TOOLS) if native else {name: BUILD_TOOLS[name] for name in ("setuptools", "wheel")}
    have = installed_versions(venv, list(wanted))
    missing = [f"{name}>={minimum}" if minimum != "0" else name for name, minimum in wanted.items()
               if have[name] is None or version_tuple(have[name]) < version_tuple(minimum)]
    need_cmake = native and usable_cmake(venv) is None
    if need_cmake:
        missing.append("cmake>=" + ".".join(map(str, MIN_CMAKE)))
    if not missing:
        log.step("build tools present: " + ", ".join(f"{n} {v}" for n, v in have.items()))
        return
    log.step("installing build tools: " + " ".join(missing))
    code, output = run_pip(venv, missing, native=False)
    if code != 0:
        fix = ("install CMake >= 3.18 (apt-get install cmake) or use --minimal" if need_cmake
               else "check the network access to PyPI")
        raise InstallError(f"could not install the build tools {' '.join(missing)}: {fix}",
                           details=output, code=EXIT_PREREQUISITE)
    if need_cmake and usable_cmake(venv) is None:
        raise InstallError("the cmake from PyPI does not run here: install CMake >= 3.18 "
                           "(apt-get install cmake) or use --minimal", code=EXIT_PREREQUISITE)


def first_error_line(output: str) -> str | None:
    """The first error of CMake or the compiler in pip's output, as one line for the summary."""
    lines = output.splitlines()
    for number, line in enumerate(lines):
        text = line.strip()
        if re.match(r"\S+: (fatal )?error: ", text):  # gcc/clang: file:line:col: error: ...
            return text
        if text.startswith("CMake Error"):
            # CMake wraps its message over the next lines: keep its first sentence.
            words = []
            for follow in lines[number + 1:number + 8]:
                words += follow.split()
                if words and words[-1].endswith("."):
                    break
            return f"{text} {' '.join(words)}"[:300]
    return None


def install_package(venv: Path, args: argparse.Namespace, log: Log) -> None:
    native = PROFILES[args.profile]["native"]
    extras = [name for name, on in (("ray", not args.no_ray), ("test", args.dev), ("dev", args.dev),
                                    ("plot", args.dev)) if on]
    target = f"{REPO}[{','.join(extras)}]" if extras else str(REPO)
    what = f"sage-queue{'[' + ','.join(extras) + ']' if extras else ''}"
    log.step(f"installing {what} editable{' with the native build (CMake)' if native else ''}; "
             f"log: {venv / INSTALL_LOG}")
    # No build isolation: the build uses the venv's tools, so a rerun needs no download.
    # -v keeps CMake's and the compiler's output in the log on success too.
    verbose = ["-v"] if native else []
    if native:
        native_dir(venv).mkdir(exist_ok=True)
    code, output = run_pip(venv, [*verbose, "--no-build-isolation", "-e", target], native)
    if code != 0:
        first = first_error_line(output) if native else None
        failed = "the native build of sage_queue" if native else f"pip install of {what}"
        raise InstallError(f"{failed} failed (pip exit {code}; its output is above and in "
                           f"{venv / INSTALL_LOG})" + (f": {first}" if first else ""), details=output)
    if native and not native_modules(venv):
        raise InstallError("pip succeeded but no native module was built in "
                           f"{native_dir(venv)}: is setup.py honouring SAGE_BUILD_NATIVE=1 and "
                           "SAGE_NATIVE_DIR?", details=output)


def native_dir(venv: Path) -> Path:
    return venv / VENV_NATIVE_DIR


def native_modules(venv: Path) -> list[Path]:
    """This venv's build of the native module (none for minimal)."""
    return sorted(native_dir(venv).glob(NATIVE_MODULE_GLOB))


def remove_tree_native_modules(log: Log) -> None:
    # The install is editable: a module in the tree would be imported by every venv on it
    # that has none of its own, a minimal one too. Each --full venv has its own now.
    for path in sorted(NATIVE_MODULE_DIR.glob(NATIVE_MODULE_GLOB)):
        path.unlink()
        log.always(f"removed the native module {path.relative_to(REPO)} from the source tree (an "
                   f"older install's or an in-place build): each --full venv has its own, in "
                   f"<venv>/{VENV_NATIVE_DIR}")


def remove_venv_native_module(venv: Path, log: Log) -> None:
    """A minimal profile has no native module: take away this venv's own, if it had one."""
    if native_dir(venv).exists():
        shutil.rmtree(native_dir(venv))
        log.always(f"removed this venv's native module ({native_dir(venv)}): the minimal profile "
                   "has none")


# -- self-check (sage.utils.self_check, run by the venv's python) ---------------------------------

# Run in the venv's python, isolated (-I) so only the venv's packages count; a venv where
# sage does not import says so as the self-check's one problem.
SELF_CHECK = (
    "import json, platform, sys\n"
    "try:\n"
    "    from sage.utils.self_check import main\n"
    "except ImportError as exc:\n"
    "    print(json.dumps({'python': platform.python_version(), 'executable': sys.executable,\n"
    "                      'problems': [f'the sage package does not import: {exc}']}))\n"
    "else:\n"
    "    sys.exit(main())\n"
)


def run_self_check(venv: Path) -> dict:
    """What works in the venv (sage.utils.self_check's report)."""
    cmd = [str(venv_python(venv)), "-I", "-c", SELF_CHECK]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=str(venv),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"problems": [f"the self-check did not run: {exc}"]}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return {"problems": [f"the self-check crashed (exit {proc.returncode}):\n{tail}"]}


def problems_for(record: dict, check: dict) -> list[str]:
    """What keeps the recorded profile from working, judged from the self-check."""
    problems = list(check.get("problems", []))
    if "native" not in check:
        return problems
    native = check["native"]
    if PROFILES[record["profile"]]["native"]:
        if native["status"] != "ok":
            problems.append(f"sage_queue: {native['status']}: {native['detail']}")
    elif native["status"] == "ok":
        problems.append("sage_queue: the native module imports in a minimal profile (a build in "
                        f"{NATIVE_MODULE_DIR} or in <venv>/{VENV_NATIVE_DIR}?)")
    elif native["status"] != "not built":
        problems.append(f"sage_queue: the import does not fail cleanly: {native['detail']}")
    if record.get("options", {}).get("ray") and check["ray"]["status"] != "ok":
        problems.append(f"ray: {check['ray']['status']}: {check['ray']['detail'] or 'reinstall'}")
    return problems


# -- report ------------------------------------------------------------------------------------------


def backends(check: dict) -> list[str]:
    found = []
    if check.get("native", {}).get("status") == "ok":
        found.append("sage_queue")
    if check.get("ray", {}).get("status") == "ok":
        found.append(f"ray_queue (ray {check['ray']['detail']})")
    if check.get("python_queue", {}).get("status") == "ok":
        found.append("python_queue")
    return found


def native_status(record: dict, check: dict) -> str:
    native = check.get("native")
    if native is None:
        return "unknown (self-check failed)"
    if native["status"] == "not built" and not PROFILES[record["profile"]]["native"]:
        return "not built (minimal profile)"
    if native["status"] == "ok":
        return f"built; {native['detail']}"
    return f"{native['status']}: {native['detail']}"


def next_steps(venv: Path, record: dict, check: dict) -> list[str]:
    steps = [f"activate:  source {venv / 'bin' / 'activate'}"]
    if check.get("tools", {}).get("pytest-xdist"):
        steps.append(f"run tests: cd {REPO} && {venv_python(venv)} -m pytest -n 2")
    else:
        steps.append(f"add the test tools: python install.py --{record['profile']} --dev, "
                     f"then: {venv_python(venv)} -m pytest -n 2")
    if not record.get("options", {}).get("ray", True):
        steps.append(f"add Ray: python install.py --{record['profile']} (without --no-ray)")
    return steps


def print_report(venv: Path, record: dict, check: dict, problems: list[str], notes: list[str]) -> None:
    backend = {"sage": "sage_queue", "ray": "ray_queue"}[record["queue_backend"]]
    rows = [
        ("venv", str(venv)),
        ("python", f"{check.get('python', record.get('python'))} ({venv_python(venv)})"),
        ("profile", f"{record['profile']} (default queue backend {backend}; "
                    f"installed {record.get('installed_at', '?')})"),
        ("sage_queue", native_status(record, check)),
        ("backends", ", ".join(backends(check)) or "none"),
    ]
    chosen = check.get("default_backend")
    if chosen:
        rows.append(("create_queue", f"-> {chosen['detail']}" +
                     (f" ({chosen['reason']})" if chosen.get("reason") else "")))
    if backend == "ray_queue" and check.get("ray", {}).get("status") != "ok":
        notes.append("the default backend ray_queue needs Ray, which is not installed")
    print("SAGE install report")
    for label, value in rows:
        print(f"  {label:<11} {value}")
    for label, lines in (("problem", problems), ("note", notes),
                         ("next", next_steps(venv, record, check))):
        for line in lines:
            print(f"  {label:<11} {line}")
            label = ""
    print(flush=True)


# -- commands --------------------------------------------------------------------------------------


def install(args: argparse.Namespace, log: Log) -> int:
    started = time.monotonic()
    venv, profile = args.venv, args.profile
    native = PROFILES[profile]["native"]
    wanted = wanted_install(args)
    recorded = read_record(args.venv)

    if recorded is not None:
        changes = differences(recorded, wanted)
        if not changes:
            check = run_self_check(venv)
            problems = problems_for(recorded, check)
            if not problems:
                log.always(f"already installed: {profile}; nothing to do")
                if not args.quiet:
                    print_report(venv, recorded, check, [], [])
                return EXIT_OK
            log.always(f"the recorded {profile} install does not work ({'; '.join(problems)}): "
                       "installing again")
        else:
            log.always(f"changing the install in {venv}: {', '.join(changes)}")

    if native:
        log.step(f"C++ compiler: {find_cxx_compiler()}")
    version = ensure_venv(venv, log)
    (venv / INSTALL_LOG).write_text(f"install.py --{profile} at {datetime.datetime.now().isoformat()}\n")
    ensure_build_tools(venv, native, log)
    install_package(venv, args, log)
    remove_tree_native_modules(log)
    if not native:
        remove_venv_native_module(venv, log)

    record = {
        "profile": profile,
        "queue_backend": PROFILES[profile]["queue_backend"],
        "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": version,
        "native_built": bool(native_modules(venv)),
        **wanted,
    }
    write_record(venv, record)
    log.step("self-check")
    check = run_self_check(venv)
    problems = problems_for(record, check)
    if not args.quiet or problems:
        print_report(venv, record, check, problems, [])
    if problems:
        raise InstallError(f"installed {profile}, but its self-check failed: {'; '.join(problems)}")
    log.always(f"installed: {profile} in {venv} ({time.monotonic() - started:.1f} s)")
    return EXIT_OK


def check_installed(args: argparse.Namespace) -> int:
    venv = args.venv
    record = read_record(venv)
    if record is None or record.get("profile") not in PROFILES:
        print(f"nothing installed at {venv}: run `python install.py --minimal` or `--full`")
        return EXIT_NOT_INSTALLED
    check = run_self_check(venv)
    problems = problems_for(record, check)
    notes = []
    if record.get("source") == str(REPO) and \
            record.get("inputs_sha256") != inputs_digest(PROFILES[record["profile"]]["native"]):
        notes.append(f"sources changed since the install: run `python install.py --{record['profile']}`")
    print_report(venv, record, check, problems, notes)
    if problems:
        print(f"the recorded {record['profile']} profile does not work: "
              f"run `python install.py --{record['profile']}`")
        return EXIT_FAILED
    print(f"ok: {record['profile']} profile works")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (install.py runs on any python3 to say so)
        print(f"install.py needs Python 3.10 or newer, not {platform.python_version()}", file=sys.stderr)
        return EXIT_PREREQUISITE
    args = parse_args(argv)
    try:
        if args.check:
            return check_installed(args)
        return install(args, Log(args.quiet))
    except InstallError as exc:
        if exc.details:
            print(exc.details.rstrip(), file=sys.stderr)
        print(f"install.py: error: {exc.summary}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print("install.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
