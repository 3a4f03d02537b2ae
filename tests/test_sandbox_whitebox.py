"""Programs written against what the walls are, by a reader of pipelines/sandbox/.

Each class of attack a white-box review found against the earlier walls (a copy of the host's
mount table, a seccomp deny list, RLIMIT_AS as the only memory limit, a module-global audit
list) has a test here. The programs run with the Python layers off, so the OS walls alone
must hold; their targets live outside /tmp (each run's scratch tmpfs hides /tmp, so a
target there proves nothing). For a root caller they belong to `nobody`, whom its programs
run as, so file modes do not stop them; a normal user's programs run as a subordinate uid
(or, without one, as the caller). CI runs this file as root and as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.sandbox import Limits, Sandbox
from pipelines.sandbox.cgroups import find_layout
from tests.conftest import needs_walls

pytestmark = needs_walls

SANDBOX_CODE = Path(__file__).resolve().parents[1] / "pipelines" / "sandbox"
PROGRAM_UID = 65534  # whom a root caller's programs run as: its victims are theirs
# System call numbers the programs use through ctypes.
NR = {
    "x86_64": {"inotify_init1": 294, "inotify_add_watch": 254, "shmget": 29, "shmat": 30,
               "semget": 64, "msgget": 68, "mq_open": 240, "timer_create": 222,
               "timerfd_create": 283, "io_setup": 206, "io_uring_setup": 425, "eventfd2": 290,
               "listmount": 458, "statmount": 457, "memfd_create": 319, "pipe2": 293,
               "setxattr": 188, "ioctl": 16, "socket": 41, "kill": 62, "sysinfo": 99},
    "aarch64": {"inotify_init1": 26, "inotify_add_watch": 27, "shmget": 194, "shmat": 196,
                "semget": 190, "msgget": 186, "mq_open": 180, "timer_create": 107,
                "timerfd_create": 85, "io_setup": 0, "io_uring_setup": 425, "eventfd2": 19,
                "listmount": 458, "statmount": 457, "memfd_create": 279, "pipe2": 59,
                "setxattr": 5, "ioctl": 29, "socket": 198, "kill": 129, "sysinfo": 179},
}[os.uname().machine]  # fmt: skip

RAW = f"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {NR!r}

def raw(name, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(NR[name], *args)
    return rc if rc >= 0 else -ctypes.get_errno()

def attempt(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, exc.errno)
    return "done"
"""


@pytest.fixture(scope="module")
def bare() -> Iterator[Sandbox]:
    """The OS walls alone: no import allowlist, no audit hook."""
    with Sandbox(Limits(timeout=10), python_layers=False) as sandbox:
        yield sandbox


@pytest.fixture
def victim() -> Iterator[Path]:
    """A private file of the programs' own uid, outside /tmp, with an extended attribute."""
    folder = Path(tempfile.mkdtemp(prefix="llamapipe-victim-", dir="/var/tmp"))
    target = folder / "id_ed25519"
    target.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    target.chmod(0o600)
    folder.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(target, PROGRAM_UID, PROGRAM_UID)
    yield target
    shutil.rmtree(folder, ignore_errors=True)


def solve(sandbox: Sandbox, code: str) -> object:
    result = sandbox.run(RAW + code)
    assert result.ok, result.error
    return result.result


def test_the_callers_files_cannot_change_in_content_or_metadata(
    bare: Sandbox, victim: Path
) -> None:
    before = victim.stat()
    tried = solve(
        bare,
        f"""
def solution():
    path = {str(victim)!r}
    return {{
        "chmod": attempt(lambda: os.chmod(path, 0o644)),
        "setuid": attempt(lambda: os.chmod(path, 0o4755)),
        "utime": attempt(lambda: os.utime(path, (0, 0))),
        "xattr": attempt(lambda: os.setxattr(path, "user.kept", b"between runs")),
        "chown": attempt(lambda: os.chown(path, os.getuid(), os.getgid())),
        "write": attempt(lambda: open(path, "a").write("x")),
        "chmod a view file": attempt(lambda: os.chmod(os.__file__, 0o777)),
        "fchmod": attempt(lambda: os.fchmod(os.open(os.__file__, os.O_RDONLY), 0o777)),
    }}
""",
    )
    assert isinstance(tried, dict) and "done" not in tried.values(), tried
    after = victim.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600 and after.st_mtime == before.st_mtime
    assert victim.read_text().endswith("KEY-----\n")
    assert os.listxattr(victim) == []


def test_nothing_outside_the_view_can_be_stated_watched_or_listed(
    bare: Sandbox, victim: Path
) -> None:
    tried = solve(
        bare,
        f"""
def solution():
    return {{
        "stat a host file": attempt(lambda: os.stat({str(victim)!r})),
        "stat /etc/passwd": attempt(lambda: os.stat("/etc/passwd")),
        "stat the repo": attempt(lambda: os.stat({str(SANDBOX_CODE)!r})),
        "stat a host process": attempt(lambda: os.stat("/proc/1")),
        "list /proc": attempt(lambda: os.listdir("/proc")),
        "xattr of a host file": attempt(lambda: os.getxattr({str(victim)!r}, "user.x")),
        "inotify": raw("inotify_init1", 0),
        "listmount": raw("listmount", 0, 0, 0, 0),
        "statmount": raw("statmount", 0, 0, 0, 0),
    }}
""",
    )
    assert isinstance(tried, dict)
    for what, outcome in tried.items():
        assert outcome != "done" and not (isinstance(outcome, int) and outcome >= 0), (
            what, outcome,
        )  # fmt: skip
    assert tried["stat a host file"] == tried["stat /etc/passwd"] == "ENOENT"  # not in view
    assert tried["inotify"] == tried["listmount"] == -1  # EPERM


def test_memory_outside_the_address_space_limit_cannot_be_had(bare: Sandbox) -> None:
    """SysV shared memory, memfd, POSIX queues, pipes: memory RLIMIT_AS does not count."""
    tried = solve(
        bare,
        """
def solution():
    big = 512 << 20
    return {
        "shmget": raw("shmget", 0, ctypes.c_size_t(big), 0o1600),  # IPC_PRIVATE, IPC_CREAT
        "semget": raw("semget", 0, 1, 0o1600),
        "msgget": raw("msgget", 0, 0o1600),
        "mq_open": raw("mq_open", b"q", 0o100, 0o600, None),
        "memfd": raw("memfd_create", b"m", 0),
        "pipe": raw("pipe2", (ctypes.c_int * 2)(), 0),
    }
""",
    )
    assert tried == {k: -1 for k in ("shmget", "semget", "msgget", "mq_open", "memfd", "pipe")}
    # And what RLIMIT_AS does count still stops at the limit.
    result = bare.run(
        "import mmap\ndef solution():\n    m = mmap.mmap(-1, 512 << 20, mmap.MAP_SHARED)\n"
        "    m[::4096] = b'x' * (len(m) // 4096)\n    return len(m)"
    )
    assert not result.ok and result.error is not None
    assert result.error.type in ("OSError", "MemoryError"), result.error


def test_the_memory_wall_counts_what_the_address_space_limit_does_not() -> None:
    """Pages of the scratch tmpfs are memory the kernel holds for the run, outside RLIMIT_AS.
    With a cgroup per run (root here) the run is stopped at its memory limit; without one
    (no delegated cgroups) only the scratch size caps them, and the sandbox says so."""
    program = (
        "def solution():\n    with open('/tmp/big', 'wb') as f:\n"
        "        for _ in range(200):\n            f.write(b'x' * (1 << 20))\n    return 200"
    )
    with Sandbox(Limits(memory_mb=64, scratch_mb=256, timeout=10), workers=0) as sandbox:
        result = sandbox.run(program)
        wall = sandbox.memory_wall
    if find_layout()[0] is not None:  # cgroups are ours to make (root here)
        assert wall.startswith("cgroup v"), wall
        assert result.killed == "memory" and result.error is not None
        assert result.error.type == "MemoryLimit"
    else:
        assert wall.startswith("RLIMIT_AS only"), wall
        assert result.ok and result.result == 200  # the hole, as documented (README Limits)


def test_per_user_and_machine_wide_quotas_cannot_be_used_up(bare: Sandbox) -> None:
    tried = solve(
        bare,
        """
def solution():
    return {
        "inotify x200": sorted({raw("inotify_init1", 0) for _ in range(200)}),
        "timer_create x1000": sorted({raw("timer_create", 1, None, ctypes.byref(ctypes.c_int()))
                                      for _ in range(1000)}),
        "timerfd": raw("timerfd_create", 1, 0),
        "eventfd": raw("eventfd2", 0, 0),
        "io_setup": raw("io_setup", 65536, ctypes.byref(ctypes.c_ulong())),
        "io_uring": raw("io_uring_setup", 8, ctypes.create_string_buffer(120)),
    }
""",
    )
    assert tried == {
        "inotify x200": [-1], "timer_create x1000": [-1], "timerfd": -1, "eventfd": -1,
        "io_setup": -1, "io_uring": -1,
    }  # fmt: skip


def test_no_lock_carries_bits_between_two_concurrent_runs(bare: Sandbox) -> None:
    """flock and fcntl locks on a file both runs can open were a channel between them."""
    holder = """
import fcntl, time
def solution():
    fd = os.open(os.__file__, os.O_RDONLY)
    got = [attempt(lambda: fcntl.flock(fd, fcntl.LOCK_EX)),
           attempt(lambda: fcntl.lockf(fd, fcntl.LOCK_SH))]
    time.sleep(1.5)
    return got
"""
    prober = """
import fcntl, time
def solution():
    time.sleep(0.5)
    fd = os.open(os.__file__, os.O_RDONLY)
    return [attempt(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
            attempt(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))]
"""
    results: dict[str, object] = {}

    def run(name: str, code: str) -> None:
        results[name] = solve(bare, code)

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in
               (("holder", holder), ("prober", prober))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"holder": ["EPERM", "EPERM"], "prober": ["EPERM", "EPERM"]}


def test_no_run_can_make_a_later_run_fail(bare: Sandbox) -> None:
    """The sandbox's own code is not in view (a chmod 000 of it once broke every later run),
    and nothing in view can change."""
    own = sorted(str(p) for p in SANDBOX_CODE.glob("*.py"))
    modes = {p: os.stat(p).st_mode for p in own}
    try:
        tried = solve(
            bare,
            f"""
def solution():
    out = []
    for path in {own!r}:
        out.append(attempt(lambda: os.chmod(path, 0)))
        out.append(attempt(lambda: os.stat(path)))
    for path in (os.__file__, os.path.dirname(os.__file__)):
        out.append(attempt(lambda: os.chmod(path, 0)))
    return sorted(set(out))
""",
        )
        assert "done" not in tried, tried  # type: ignore[operator]
    finally:
        for path, mode in modes.items():
            if os.stat(path).st_mode != mode:
                os.chmod(path, mode)
    assert {p: os.stat(p).st_mode for p in own} == modes
    assert solve(bare, "def solution():\n    return 6 * 7") == 42


def forging(result: str) -> str:
    """A program that writes a report of its own, with `result` as its JSON result, on every
    descriptor it may hold (one is the report's pipe), then exits before the worker reports."""
    return f"""
def solution():
    forged = b'{{"ok": true, "result": {result}, "error": null, "memory": false}}'
    for fd in range(3, 64):
        try:
            os.write(fd, forged)
        except OSError:
            pass
    os._exit(0)
"""


@pytest.mark.parametrize("layers", [False, True], ids=["OS walls alone", "with Python layers"])
@pytest.mark.parametrize("forged", ["NaN", "Infinity", "1e999", '"1", "ok": false'])
def test_a_report_the_program_wrote_itself_is_checked(layers: bool, forged: str) -> None:
    """The program may write on its report's pipe; the host accepts only a strict report."""
    code = "import random\nos = random._os\n" + forging(forged)
    with Sandbox(Limits(timeout=5), workers=0, python_layers=layers) as sandbox:
        result = sandbox.run(code)
    assert not result.ok and result.error is not None
    assert result.error.type == "ResultError", result.error
    json.dumps(result.to_json(), allow_nan=False)  # what --json prints is valid JSON


def test_the_python_layers_cannot_be_switched_off_from_inside() -> None:
    """Their lists live in closures, and the sandbox's modules are not in sys.modules (the
    program reaches sys through many an allowed module: typing.sys)."""
    code = """
import typing
sys = typing.sys
def solution():
    found = [n for n in ("_worker", "_walls", "_root", "_seccomp", "_zygote") if n in sys.modules]
    for module in list(sys.modules.values()):
        if hasattr(module, "_BLOCKED_EVENTS"):
            module._BLOCKED_EVENTS = ()
    try:
        sys.modules["os"].system("true")
        system = "ran"
    except PermissionError:
        system = "refused"
    return [found, system, sys.modules["__main__"].__dict__ is globals()]
"""
    with Sandbox(Limits(timeout=5), workers=0) as sandbox:
        result = sandbox.run(code)
    assert result.ok, result.error
    assert result.result == [[], "refused", True]


def test_signals_and_sockets_stay_refused_by_the_allow_list(bare: Sandbox) -> None:
    tried = solve(
        bare,
        """
def solution():
    return [raw("socket", 2, 1, 0), raw("kill", 1, 0), raw("ioctl", 0, 0x5412, b"x")]
""",
    )
    assert tried == [-1, -1, -1]


def test_what_a_program_needs_still_works_under_the_allow_list(bare: Sandbox) -> None:
    """Threads, scratch files, time, randomness: the calls a Python program makes."""
    tried = solve(
        bare,
        """
import threading, time, random, tempfile
def solution():
    out = []
    t = threading.Thread(target=lambda: out.append(sum(range(1000))))
    t.start(); t.join()
    with open("/tmp/a.txt", "w") as f:
        f.write("한글")
    os.rename("/tmp/a.txt", "/tmp/b.txt")
    os.mkdir("/tmp/d"); os.rmdir("/tmp/d")
    time.sleep(0.01)
    return [out[0], open("/tmp/b.txt").read(), len(os.urandom(8)), os.getcwd(),
            os.isatty(0), random.random() < 1]
""",
    )
    assert tried == [499500, "한글", 8, "/tmp", False, True]
    _ = time  # the programs sleep; the host does not


def test_no_channel_through_the_page_cache_of_shared_files(bare: Sandbox) -> None:
    """fadvise (evict a stdlib file's pages) and preadv2 with RWF_NOWAIT (are they cached?)
    carried bits between runs, zygotes and users; both are refused, as is sysinfo (the host's
    task count)."""
    tried = solve(
        bare,
        """
def solution():
    fd = os.open(os.__file__, os.O_RDONLY)
    return [
        attempt(lambda: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)),
        attempt(lambda: os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)),
        raw("sysinfo", ctypes.create_string_buffer(128)),
        sys_argv(),
    ]

def sys_argv():
    import sys
    return sys.argv + sys.orig_argv
""",
    )
    assert tried == ["EPERM", "EPERM", -1, ["<program>", "<program>"]]


def test_text_that_is_not_unicode_comes_back_escaped_and_prints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.cli_helpers import run_cli

    program = tmp_path / "surrogate.py"
    program.write_text('def solution():\n    return {"\\ud800": "a\\udfffb"}\n')
    result = run_cli(capsys, "sandbox", "run", str(program), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["result"] == {"\\ud800": "a\\udfffb"}  # the escapes, as text


@pytest.mark.parametrize(
    "forged",
    ["[" * 40 + "]" * 40, "[" + ",".join(["0"] * 150_000) + "]", str(1 << 200), '"\\ud800"'],
    ids=["deeper than result_depth", "more than result_items", "an int past 128 bits",
         "a lone surrogate"],
)  # fmt: skip
def test_a_forged_result_past_the_result_limits_is_refused(bare: Sandbox, forged: str) -> None:
    result = bare.run(RAW + forging(forged))
    assert not result.ok and result.error is not None
    assert result.error.type == "ResultError", result.error
