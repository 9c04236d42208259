"""Another, unprivileged user on the same machine cannot open, read, write, unlink or replace a
queue segment it was not given. Root creates the queue; a snippet runs as user nobody
(setpriv, else runuser) and tries; the queue must be untouched afterwards.

The test's own interpreter or the repository may not be readable by nobody (a pyenv under
/root, say): then the snippet runs under another build of the same Python (the extension's
ABI tag must match) and imports a copy of the sage_queue package made readable under /tmp.
"""

import glob
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import uuid

import pytest

from conftest import package_root, requires_native, segment_file

pytestmark = [requires_native, pytest.mark.timeout(120)]

OTHER_USER = "nobody"

PROBE = textwrap.dedent(
    """
    import json, os, sys, sysconfig
    print(json.dumps({"ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "euid": os.geteuid()}))
    """
)

ATTEMPTS = textwrap.dedent(
    """
    import json, os, sys
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    from sage_ext.sage_queue.python import sage_queue_manager as manager

    name, path = sys.argv[1], sys.argv[2]
    out = {"euid": os.geteuid(), "egid": os.getegid(), "groups": os.getgroups()}

    def attempt(what, call):
        try:
            result = call()
            out[what] = ["succeeded", repr(result)[:200]]
        except Exception as e:  # SegmentUntrustedError is a PermissionError
            kind = "PermissionError" if isinstance(e, PermissionError) else type(e).__name__
            out[what] = [kind, f"{type(e).__name__}: {str(e)[:300]}"]

    attempt("SageQueue.open", lambda: SageQueue.open(name))
    attempt("SageQueue(name)", lambda: SageQueue(name))
    attempt("SageQueue.create", lambda: SageQueue.create(name))
    attempt("read the file", lambda: open(path, "rb").read(64))
    attempt("open the file for writing", lambda: open(path, "r+b"))
    attempt("truncate the file", lambda: os.truncate(path, 0))
    attempt("chmod the file", lambda: os.chmod(path, 0o666))
    attempt("rename the file", lambda: os.rename(path, path + ".stolen"))
    attempt("unlink the file", lambda: os.unlink(path))
    attempt("manager list", lambda: [(i.problem, i.owner_uid) for i in manager.list_queues([name])])
    attempt("manager remove", lambda: manager.remove(name))
    attempt("manager cleanup --force", lambda: manager.cleanup(force=True, min_age=0, names=[name]))
    print(json.dumps(out))
    """
)


def other_user():
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        return None


def as_other_user(argv):
    """argv run as nobody, by setpriv (no PAM, no session) or runuser."""
    user = other_user()
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--", *argv]
    return ["runuser", "-u", OTHER_USER, "--", *argv]


def run_as_other_user(argv, pythonpath=None, timeout=60):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(as_other_user(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def interpreters():
    """Candidates: this interpreter, its real file, its base, then the same version on PATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    seen = []
    for c in (sys.executable, os.path.realpath(sys.executable), getattr(sys, "_base_executable", None),
              shutil.which(version, path="/usr/local/bin:/usr/bin:/bin"), f"/usr/bin/{version}",
              f"/usr/local/bin/{version}"):
        if c and os.path.exists(c) and c not in seen:
            seen.append(c)
    return seen


@pytest.fixture(scope="module")
def other_python():
    """(interpreter, PYTHONPATH) with which nobody can import sage_queue, or a precise skip."""
    if os.geteuid() != 0:
        pytest.skip("running as another user needs root (setpriv/runuser); this test runs as uid "
                    f"{os.geteuid()}")
    if other_user() is None:
        pytest.skip(f"there is no user {OTHER_USER!r} on this machine")
    if not (shutil.which("setpriv") or shutil.which("runuser")):
        pytest.skip("neither setpriv nor runuser is installed")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    tried = []
    python = None
    for candidate in interpreters():
        r = run_as_other_user([candidate, "-c", PROBE])
        if r.returncode != 0:
            tried.append(f"{candidate}: {r.stderr.strip()[-200:]}")
            continue
        probe = json.loads(r.stdout)
        assert probe["euid"] == other_user().pw_uid, f"setpriv/runuser did not switch users: {probe}"
        if probe["ext_suffix"] != suffix:
            tried.append(f"{candidate}: extension suffix {probe['ext_suffix']}, ours is {suffix}")
            continue
        python = candidate
        break
    if python is None:
        pytest.skip(f"no interpreter that {OTHER_USER} may run loads our {suffix} extension: {tried}")

    check = [python, "-c", "import sage_ext.sage_queue.python.sage_queue"]
    packages = package_root()
    if run_as_other_user(check, pythonpath=packages).returncode == 0:
        yield python, packages
        return
    # Copy what `import sage_queue` needs to where nobody can read it.
    root = tempfile.mkdtemp(prefix="sage-other-user-", dir="/tmp")
    dest = os.path.join(root, "sage_ext", "sage_queue", "python")
    os.makedirs(dest)
    for init in ("sage_ext/__init__.py", "sage_ext/sage_queue/__init__.py"):
        shutil.copy(os.path.join(packages, init), os.path.join(root, init))
    package = os.path.join(packages, "sage_ext", "sage_queue", "python")
    for f in glob.glob(os.path.join(package, "*.py")) + glob.glob(os.path.join(package, f"_native*{suffix}")):
        shutil.copy(f, dest)
    # sage_queue takes its errors and install hints from the queue layer (sage.utils)
    shutil.copytree(os.path.join(packages, "sage"), os.path.join(root, "sage"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    r = run_as_other_user(check, pythonpath=root)
    if r.returncode != 0:
        shutil.rmtree(root)
        pytest.fail(f"{OTHER_USER} cannot import a readable copy of sage_queue with {python}: {r.stderr[-1000:]}")
    yield python, root
    shutil.rmtree(root)


def test_another_user_cannot_open_read_write_unlink_or_replace_a_queue(other_python):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    python, pythonpath = other_python
    shm = os.stat("/dev/shm")
    assert shm.st_mode & stat.S_ISVTX, "/dev/shm is not sticky: any user could unlink any segment"
    name = f"other-user-{uuid.uuid4().hex[:16]}"
    path = segment_file(name)
    q = SageQueue(name, capacity_bytes=64 * 1024)
    try:
        q.put_many([b"secret", "also secret"])
        before = os.stat(path)
        assert (stat.S_IMODE(before.st_mode), before.st_uid) == (0o600, 0)

        r = run_as_other_user([python, "-c", ATTEMPTS, name, path], pythonpath=pythonpath)
        assert r.returncode == 0, f"the snippet failed as {OTHER_USER}: {r.stderr[-2000:]}"
        out = json.loads(r.stdout.strip().splitlines()[-1])
        user = other_user()
        assert (out["euid"], out["egid"]) == (user.pw_uid, user.pw_gid) and 0 not in out["groups"], out

        refused = {
            "SageQueue.open": {"PermissionError"},
            "SageQueue(name)": {"PermissionError", "FileExistsError"},  # never a second queue
            "SageQueue.create": {"PermissionError", "FileExistsError"},
            "read the file": {"PermissionError"},
            "open the file for writing": {"PermissionError"},
            "truncate the file": {"PermissionError"},
            "chmod the file": {"PermissionError"},
            "rename the file": {"PermissionError"},
            "unlink the file": {"PermissionError"},
            "manager remove": {"PermissionError"},
        }
        wrong = {what: out[what] for what, ok in refused.items() if out[what][0] not in ok}
        assert not wrong, f"as {OTHER_USER}, these were not refused: {wrong}"
        # The tools list another user's queue as not trusted and never remove it, even with --force.
        assert out["manager list"] == ["succeeded", repr([("not trusted", 0)])], out["manager list"]
        assert out["manager cleanup --force"] == ["succeeded", "[]"], out["manager cleanup --force"]

        after = os.stat(path)
        assert (after.st_ino, after.st_size, after.st_mode, after.st_uid) == (
            before.st_ino, before.st_size, before.st_mode, before.st_uid), "the segment file was changed"
        assert not os.path.exists(path + ".stolen")
        s = q.stats()
        assert s.attached_pids == (os.getpid(),) and s.dead_pids == (), f"someone else attached: {s}"
        assert (s.items, s.puts, s.gets) == (2, 2, 0)
        assert q.get_many(8, timeout=1) == [b"secret", "also secret"]
        q.put(b"still works")
        assert q.get(timeout=1) == b"still works"
    finally:
        q.destroy()
    assert not os.path.exists(path)
