#!/usr/bin/env python3
"""The Docker matrix: for each install profile, build the runtime and test images and run them.

    python ci/docker_matrix.py [--profile minimal|full ...] [--base-image IMAGE]

Checks, per profile: both images build; `sage info` (the runtime image's default command)
reports the profile's backend; the runtime runs as non-root and has no compiler; `sage demo`
runs its pipeline and checks its counts (processes over sage_queue on full, threads on
minimal); on full, a queue
that does not fit /dev/shm (`--shm-size=1m`) fails at creation with ENOSPC naming
--shm-size; the test image's suite passes (its exit status is the suite's).

Prints one table: profile x check -> pass/FAIL, image, size, build s, run s. Exits 1 if any
cell failed, 2 if the matrix could not run at all. Build and run logs go to --log-dir.

BASE_IMAGE: --base-image, else python:3.11-slim-bookworm if the engine has it or can pull
it, else the stand-in that ci/base_image.sh builds without a registry (cached).
Talks to the engine through the Docker SDK for Python (`pip install docker`; `tox -e docker`
installs it). If no engine answers, starts dockerd (installing Debian's docker.io first if
there is none) and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_BASE = "python:3.11-slim-bookworm"
PROFILES = ("minimal", "full")
IMAGE = "sage-queue"  # tags: sage-queue:<profile>, sage-queue:<profile>-test
BACKEND = {"minimal": "ray_queue", "full": "sage_queue"}
# --shm-size of each test run (None: Docker's default 64 MB, which `docker run --rm IMAGE`
# gets). The default is the tight case: a run at a larger size passed the same tests.
TEST_SHM = {"minimal": (None,), "full": (None,)}
DETAIL_WIDTH = 72
TIMEOUT = {"check": 300, "tests": 900}  # seconds a container may run (the suite takes ~1 min)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")

# In the full runtime image with --shm-size=1m: an 8 MiB queue cannot fit.
SHM_PROBE = r"""
import errno, sys
from sage_ext.sage_queue.python.sage_queue import SageQueue
try:
    q = SageQueue("shm-probe", capacity_bytes=8 << 20)
except OSError as exc:
    print(f"{type(exc).__name__} [errno {exc.errno}] {exc}")
    sys.exit(0 if exc.errno == errno.ENOSPC and "--shm-size" in str(exc) else 1)
q.destroy()
sys.exit("an 8 MiB queue was created in a 1 MiB /dev/shm: no error")
"""
SLIM_PROBE = ('echo "uid $(id -u)"; for c in cc gcc g++ c++ clang cmake make; do '
              'command -v "$c" >/dev/null && echo "compiler tool: $c"; done; true')


@dataclass
class Cell:
    profile: str
    check: str
    ok: bool
    image: str = ""
    size: int | None = None
    build_s: float | None = None
    run_s: float | None = None
    detail: str = ""
    log: Path | None = None


def say(message: str) -> None:
    print(f"docker_matrix: {message}", flush=True)


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the engine ---------------------------------------------------------------------------------


class Engine:
    """A Docker client; starts dockerd when none answers and stops it again in close()."""

    def __init__(self, log_dir: Path):
        import docker

        self.docker = docker
        self.process: subprocess.Popen | None = None
        self.client = self._connect()
        if self.client is None:
            self.client = self._start(log_dir / "dockerd.log")

    def _connect(self, timeout: int = 600):
        try:
            client = self.docker.from_env(timeout=timeout)
            client.ping()
            return client
        except (self.docker.errors.DockerException, OSError):  # no socket, refused, silent
            return None

    def _start(self, log_path: Path):
        if shutil.which("dockerd") is None:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                raise SystemExit("no Docker engine answers and dockerd is not installed: "
                                 "install Docker (Debian: apt-get install docker.io)")
            say("installing docker.io (Debian's engine)")
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "docker.io"]):
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                               env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        say(f"no engine answers: starting dockerd (log {log_path})")
        with open(log_path, "ab") as log:  # dockerd keeps its own copy of the descriptor
            self.process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"dockerd exited ({self.process.returncode}):\n{tail(log_path)}")
            client = self._connect()
            if client is not None:
                return client
            time.sleep(0.5)
        self.close()
        raise SystemExit(f"dockerd did not answer within 90 s:\n{tail(log_path)}")

    def close(self) -> None:
        if self.process is None:
            return
        say("stopping the dockerd this run started")
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


# -- base image, builds, runs ------------------------------------------------------------------


def choose_base_image(engine: Engine, wanted: str | None, log_dir: Path) -> str:
    images = engine.client.images
    if wanted:
        return wanted
    try:
        images.get(OFFICIAL_BASE)
        return OFFICIAL_BASE
    except engine.docker.errors.ImageNotFound:
        pass
    try:
        repo, tag = OFFICIAL_BASE.split(":")
        images.pull(repo, tag=tag)
        return OFFICIAL_BASE
    except engine.docker.errors.APIError as exc:
        reason = (getattr(exc, "explanation", None) or str(exc)).splitlines()[0][:120]
        say(f"cannot pull {OFFICIAL_BASE} ({reason}): using the stand-in from ci/base_image.sh")
    log = log_dir / "base_image.log"
    with open(log, "w") as err:
        proc = subprocess.run(["bash", str(REPO / "ci" / "base_image.sh")], check=False,
                              stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"ci/base_image.sh failed ({proc.returncode}):\n{tail(log)}")
    return proc.stdout.strip().splitlines()[-1]


def build(engine: Engine, profile: str, target: str, tag: str, base: str, log: Path) -> Cell:
    buildargs = {"BASE_IMAGE": base, "PROFILE": profile}
    # Docker's predefined proxy build args: passed on when the host has them, kept out of history
    buildargs.update({k: v for k, v in os.environ.items() if k in PROXY_VARS})
    cell = Cell(profile, f"build {target}", False, image=tag, log=log)
    try:
        old_id = engine.client.images.get(tag).id
    except engine.docker.errors.ImageNotFound:
        old_id = None
    started = time.monotonic()
    error = None
    with open(log, "w") as out:
        try:
            for chunk in engine.client.api.build(path=str(REPO), tag=tag, target=target,
                                                 buildargs=buildargs, rm=True, forcerm=True,
                                                 pull=False, decode=True):
                if "stream" in chunk:
                    out.write(chunk["stream"])
                if "error" in chunk:
                    error = chunk["error"].strip()
                    out.write(f"ERROR: {error}\n")
        except engine.docker.errors.APIError as exc:
            error = str(exc)
            out.write(f"ERROR: {error}\n")
    cell.build_s = time.monotonic() - started
    if error:
        cell.detail = error.splitlines()[-1][:120]
        return cell
    image = engine.client.images.get(tag)
    cell.ok, cell.size = True, image.attrs["Size"]
    if old_id and old_id != image.id:  # the replaced image, if nothing else holds it
        try:
            engine.client.images.remove(old_id)
        except engine.docker.errors.APIError:
            pass
    return cell


def run(engine: Engine, image: str, command, log: Path, timeout: int, shm_size: str | None = None):
    """(exit code or None on timeout, output, seconds) of one container, removed afterwards."""
    started = time.monotonic()
    container = engine.client.containers.run(image, command, detach=True, shm_size=shm_size)
    code = None
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
    except (engine.docker.errors.DockerException, OSError):  # read timeout: over its budget
        container.kill()
    finally:
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        container.remove(force=True)
    seconds = time.monotonic() - started
    log.write_text(output)
    return code, output, seconds


def pytest_summary(output: str) -> str:
    lines = [ln.strip("= ") for ln in output.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    return lines[-1] if lines else ""


def check_cells(engine: Engine, profile: str, runtime: Cell, test: Cell, log_dir: Path):
    def cell(check, image_cell, command, judge, shm=None, timeout=TIMEOUT["check"]):
        log = log_dir / f"{profile}-{re.sub(r'[^A-Za-z0-9]+', '-', check).strip('-')}.log"
        code, out, seconds = run(engine, image_cell.image, command, log, timeout, shm)
        if code is None:
            ok, detail = False, f"timed out after {timeout} s"
        else:
            ok, detail = judge(code, out)
        return Cell(profile, check, ok, image_cell.image, image_cell.size, None, seconds,
                    detail, log)

    def info(code, out):
        want = f"current backend : {BACKEND[profile]}"
        found = next((ln.strip() for ln in out.splitlines() if "current backend" in ln), "")
        return code == 0 and want in out, found or f"exit {code}"

    def slim(code, out):
        tools = re.findall(r"compiler tool: (\S+)", out)
        uid = re.search(r"uid (\d+)", out)
        ok = code == 0 and not tools and uid is not None and uid.group(1) != "0"
        return ok, (f"uid {uid.group(1) if uid else '?'}; "
                    f"compilers: {', '.join(tools) if tools else 'none'}")

    def demo(code, out):
        # Processes over sage_queue on full, threads on minimal: both check their counts.
        rate = re.search(r"^keyby .*?([\d,]+)\s*$", out, re.M)
        ok = code == 0 and "the counts match a one-process count" in out
        return ok, (f"counts checked, keyby {rate.group(1)} items/s" if ok and rate
                    else (out.strip().splitlines() or [f"exit {code}"])[-1][:100])

    def shm(code, out):
        return code == 0, (out.strip().splitlines() or [f"exit {code}"])[-1][:110]

    def tests(code, out):
        summary = pytest_summary(out)
        return code == 0 and "passed" in summary, summary or f"exit {code}"

    cells = []
    if runtime.ok:
        cells.append(cell("sage info", runtime, None, info))
        cells.append(cell("non-root, no compiler", runtime, ["sh", "-c", SLIM_PROBE], slim))
        cells.append(cell("sage demo", runtime, ["sage", "demo", "--lines", "50000"], demo))
        if profile == "full":
            cells.append(cell("/dev/shm 1m: ENOSPC", runtime, ["python", "-c", SHM_PROBE], shm,
                              shm="1m"))
    if test.ok:
        for shm_size in TEST_SHM[profile]:
            cells.append(cell(f"tests (shm {shm_size or '64m'})", test, None, tests, shm=shm_size,
                              timeout=TIMEOUT["tests"]))
    return cells


# -- the table -----------------------------------------------------------------------------------


def print_table(cells: list[Cell], base: str, total_s: float) -> None:
    def mb(size):
        return f"{size / 1e6:.0f} MB" if size else "-"

    def sec(value):
        return f"{value:.1f}" if value is not None else "-"

    header = ("profile", "check", "result", "image", "size", "build s", "run s", "detail")
    rows = [(c.profile, c.check, "pass" if c.ok else "FAIL", c.image, mb(c.size), sec(c.build_s),
             sec(c.run_s), c.detail[:DETAIL_WIDTH]) for c in cells]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    print()
    print(f"Docker matrix (BASE_IMAGE={base}; {total_s:.0f} s in all)")
    for r in [header, *rows]:
        cols = (str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True))
        print("  ".join(cols) + "  " + r[-1])
    failed = [c for c in cells if not c.ok]
    print(f"{len(cells) - len(failed)} passed, {len(failed)} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="append", choices=PROFILES,
                        help="a profile to run (repeatable; default: both)")
    parser.add_argument("--base-image",
                        help=f"BASE_IMAGE for the builds (default: {OFFICIAL_BASE} if it can be "
                             "had, else the ci/base_image.sh stand-in)")
    parser.add_argument("--log-dir", type=Path, help="where build and run logs go (default: a "
                                                     "new directory under /tmp)")
    args = parser.parse_args(argv)
    profiles = args.profile or list(PROFILES)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="sage-docker-matrix-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DOCKER_BUILDKIT", "0")  # for ci/base_image.sh's docker CLI

    try:
        import docker  # noqa: F401
    except ImportError:
        print("ci/docker_matrix.py needs the Docker SDK for Python: pip install docker "
              "(or run `tox -e docker`)", file=sys.stderr)
        return 2

    started = time.monotonic()
    engine = Engine(log_dir)
    cells: list[Cell] = []
    try:
        base = choose_base_image(engine, args.base_image, log_dir)
        say(f"BASE_IMAGE={base}; logs in {log_dir}")
        for profile in profiles:
            built = {}
            for target, tag in (("runtime", f"{IMAGE}:{profile}"),
                                ("test", f"{IMAGE}:{profile}-test")):
                built[target] = build(engine, profile, target, tag, base,
                                      log_dir / f"{profile}-build-{target}.log")
                cells.append(built[target])
                say(f"{profile}: build {target}: {'pass' if built[target].ok else 'FAIL'} "
                    f"({built[target].build_s:.1f} s)")
            for cell in check_cells(engine, profile, built["runtime"], built["test"], log_dir):
                result = "pass" if cell.ok else "FAIL"
                say(f"{profile}: {cell.check}: {result} ({cell.run_s:.1f} s)")
                cells.append(cell)
    finally:
        engine.close()

    for cell in cells:
        if not cell.ok:
            print(f"\n--- {cell.profile}: {cell.check} failed; end of {cell.log}:")
            print(tail(cell.log))
    print_table(cells, base, time.monotonic() - started)
    return 0 if cells and all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
