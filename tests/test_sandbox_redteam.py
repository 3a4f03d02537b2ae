"""Red team: hostile programs, judged by their side effects, never by error text.

Every program runs through the Sandbox inside a guard process (tests/sandbox_guard.py) in
its own pid namespace, so even a broken sandbox could not reach the developer's session.

Each program runs three times: with every layer ("all"), with the Python-level layers
switched off ("os-only": no audit hook, no import allowlist, dangerous modules preloaded),
which shows that the OS walls hold on their own, and os-only with the run's tool channel
served ("os-only+channel"), which shows the channel widens none of them.

The targets are made reachable for the sandbox's uid on purpose (a world-readable secret,
a world-writable dir), so only the walls stand between the program and them.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_walls

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = "LLAMAPIPE_REDTEAM_SECRET"


pytestmark = [
    pytest.mark.slow,
    pytest.mark.enable_socket,  # the loopback listener that must never hear from a program
    needs_walls,
]

# What "os-only" preloads so the program can reach for them without the allowlist.
DANGEROUS = (
    "os", "posix", "sys", "io", "socket", "_socket", "subprocess", "_posixsubprocess",
    "ctypes", "threading", "multiprocessing", "pty", "signal", "resource", "urllib.request",
    "select", "gc", "inspect", "shutil", "mmap", "fcntl", "pickle", "marshal", "importlib",
    "_thread", "asyncio",
)  # fmt: skip


class Guard:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sandbox_guard"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lock = threading.Lock()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        assert line, f"the guard died (exit {self.proc.poll()})"
        return dict(json.loads(line))

    def alive(self) -> bool:
        return self.proc.poll() is None and self.ask({"ping": True}).get("pong") is True

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Targets:
    """Things a program must not reach, all reachable for its uid but for the walls."""

    root: Path
    secret: str
    secret_file: Path
    open_dir: Path  # world-writable: only the walls stop a write here
    port: int
    connections: list[str] = field(default_factory=list)
    guard_pid: int = 0

    def marker(self, name: str) -> Path:
        return self.open_dir / name

    def fill(self, code: str, name: str) -> str:
        return (
            code.replace("SECRET_FILE", str(self.secret_file))
            .replace("SECRET_DIR", str(self.secret_file.parent))
            .replace("MARKER", str(self.marker(name)))
            .replace("OPEN_DIR", str(self.open_dir))
            .replace("PORT", str(self.port))
            .replace("GUARD_PID", str(self.guard_pid))
            .replace("TEST_PID", str(os.getpid()))
        )


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    root = Path(tempfile.mkdtemp(prefix="llamapipe-redteam-"))
    root.chmod(0o755)
    secret = "s3cr3t-" + secrets.token_hex(8)
    home = root / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    secret_file = home / "notes.txt"
    secret_file.write_text(f"the secret is {secret}\n")
    secret_file.chmod(0o644)
    open_dir = root / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    t = Targets(root, secret, secret_file, open_dir, listener.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t.connections.append(str(addr))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield t
    stop.set()
    thread.join()
    listener.close()
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def guard(targets: Targets) -> Iterator[Guard]:
    env = {**os.environ, SECRET_ENV: targets.secret, "HOME": str(targets.secret_file.parent)}
    g = Guard(env)
    targets.guard_pid = g.proc.pid
    assert g.alive()
    yield g
    g.close()


@dataclass
class Run:
    result: dict[str, Any]
    targets: Targets
    name: str

    @property
    def text(self) -> str:
        return json.dumps(self.result, ensure_ascii=False)

    def leaked(self) -> bool:
        return self.targets.secret in self.text

    def marker_made(self) -> bool:
        return self.targets.marker(self.name).exists()


Check = Callable[[Run], None]


def no_secret(run: Run) -> None:
    assert not run.leaked(), "the secret came out"


def no_marker(run: Run) -> None:
    assert not run.marker_made(), "the program wrote outside its scratch dir / ran a program"


def no_connection(run: Run) -> None:
    time.sleep(0.3)  # give the listener a moment to notice a connection
    assert not run.targets.connections, "the program reached the loopback listener"


def not_ok(run: Run) -> None:
    assert run.result["ok"] is False


def killed(*how: str) -> Check:
    def check(run: Run) -> None:
        assert run.result["killed"] in how, run.result

    return check


def all_of(*checks: Check) -> Check:
    def check(run: Run) -> None:
        for c in checks:
            c(run)

    return check


def stopped_or_failed(*how: str) -> Check:
    """Stopped by a limit, refused, or failed with an error the sandbox reported (a runaway
    recursion ends in whichever comes first: the timer, RLIMIT_AS, or CPython giving up with
    a RecursionError/SystemError when no memory is left for another frame)."""

    def check(run: Run) -> None:
        error = run.result["error"] or {}
        failed = not run.result["ok"] and error.get("type") not in (None, "Exception")
        assert run.result["killed"] in how or failed, run.result

    return check


def stopped_or_refused(*how: str) -> Check:
    """Stopped by a limit, or (with the Python layers on) refused its import."""

    def check(run: Run) -> None:
        refused = (run.result["error"] or {}).get("type") == "ImportError"
        assert run.result["killed"] in how or refused, run.result

    return check


SPAWN = all_of(no_marker, no_secret)
TOUCH = "['/bin/sh', '-c', 'touch MARKER']"

CASES: dict[str, tuple[str, Check]] = {
    # -- host files and environment ------------------------------------------------------
    "read-secret-file": ("def solution():\n    return open('SECRET_FILE').read()", no_secret),
    "list-secret-dir": ("import os\ndef solution():\n    return os.listdir('SECRET_DIR')",
                        lambda r: (no_secret(r), not_ok(r))),
    "read-etc-passwd": ("def solution():\n    return open('/etc/passwd').read()",
                        lambda r: (not_ok(r), None)),
    "read-repo-source": (f"def solution():\n    return open('{ROOT}/README.md').read()", not_ok),
    "env-vars": ("import os\ndef solution():\n    return dict(os.environ)", no_secret),
    "proc-self-environ": ("def solution():\n    return open('/proc/self/environ','rb').read()",
                          no_secret),
    "proc-parent-environ": ("import os\ndef solution():\n"
                            "    return open(f'/proc/{os.getppid()}/environ','rb').read()", no_secret),
    "proc-guard-environ": ("def solution():\n    return open('/proc/GUARD_PID/environ','rb').read()",
                           no_secret),
    "proc-walk-environ": ("import os\ndef solution():\n    out=[]\n    for p in os.listdir('/proc'):\n"
                          "        try: out.append(open(f'/proc/{p}/environ','rb').read())\n"
                          "        except Exception: pass\n    return [repr(x) for x in out]", no_secret),
    "proc-cmdline-mem": ("def solution():\n    return open('/proc/GUARD_PID/cmdline','rb').read()",
                         not_ok),
    "symlink-to-secret": ("import os\ndef solution():\n    os.symlink('SECRET_FILE','/tmp/l')\n"
                          "    return open('/tmp/l').read()", no_secret),
    "hardlink-to-secret": ("import os\ndef solution():\n    os.link('SECRET_FILE','/tmp/h')\n"
                           "    return open('/tmp/h').read()", no_secret),
    "dev-mem": ("def solution():\n    return open('/dev/mem','rb').read(64)", not_ok),
    # -- writing outside scratch -------------------------------------------------------------
    "write-open-dir": ("def solution():\n    open('MARKER','w').write('x')", no_marker),
    "mkdir-open-dir": ("import os\ndef solution():\n    os.mkdir('MARKER')", no_marker),
    "rename-into-open-dir": ("import os\ndef solution():\n    open('/tmp/a','w').write('x')\n"
                             "    os.rename('/tmp/a','MARKER')", no_marker),
    "write-via-dotdot": ("def solution():\n    open('/tmp/../../../../MARKER','w').write('x')",
                         no_marker),
    # -- network ---------------------------------------------------------------------------
    "socket-connect-loopback": ("import socket\ndef solution():\n    s=socket.socket()\n"
                                "    s.connect(('127.0.0.1', PORT))", no_connection),
    "raw-_socket": ("import _socket\ndef solution():\n"
                    "    s=_socket.socket(_socket.AF_INET,_socket.SOCK_STREAM)\n"
                    "    s.connect(('127.0.0.1', PORT))", no_connection),
    "urllib-loopback": ("import urllib.request\ndef solution():\n"
                        "    return urllib.request.urlopen('http://127.0.0.1:PORT/').read()",
                        no_connection),
    "udp-send": ("import socket\ndef solution():\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                 "    s.sendto(b'x',('127.0.0.1',PORT))", not_ok),
    "unix-socket-bind": ("import socket\ndef solution():\n    s=socket.socket(socket.AF_UNIX)\n"
                         "    s.bind('\\0llamapipe-redteam')", not_ok),
    # -- spawning ---------------------------------------------------------------------------
    "os-system": ("import os\ndef solution():\n    os.system('touch MARKER')", SPAWN),
    "subprocess-run": (f"import subprocess\ndef solution():\n    subprocess.run({TOUCH})", SPAWN),
    "os-fork": ("import os\ndef solution():\n    if os.fork() == 0:\n"
                "        open('MARKER','w')\n        os._exit(0)", SPAWN),
    "os-execv": (f"import os\ndef solution():\n    os.execv('/bin/sh', {TOUCH})", SPAWN),
    "os-posix-spawn": (f"import os\ndef solution():\n    os.posix_spawn('/bin/sh', {TOUCH}, {{}})",
                       SPAWN),
    "posixsubprocess": ("import _posixsubprocess, os\ndef solution():\n"
                        "    _posixsubprocess.fork_exec([b'/bin/sh',b'-c',b'touch MARKER'],"
                        "[b'/bin/sh'],True,(),None,None,-1,-1,-1,-1,-1,-1,*os.pipe(),"
                        "False,False,None,None,None,-1,None,False)", SPAWN),
    "pty-fork": ("import pty, os\ndef solution():\n    if pty.fork()[0] == 0:\n"
                 "        open('MARKER','w')\n        os._exit(0)", SPAWN),
    "multiprocessing": ("import multiprocessing\ndef touch():\n    open('MARKER','w')\n"
                        "def solution():\n    p=multiprocessing.Process(target=touch)\n"
                        "    p.start(); p.join()", SPAWN),
    "ctypes-system": ("import ctypes\ndef solution():\n    ctypes.CDLL(None).system(b'touch MARKER')",
                      SPAWN),
    "ctypes-fork-syscall": ("import ctypes\ndef solution():\n    libc=ctypes.CDLL(None)\n"
                            "    if libc.syscall(57) == 0:\n        open('MARKER','w')\n"
                            "        libc._exit(0)", SPAWN),
    # -- introspection escapes (Python layers off or on, the walls decide) ----------------
    "subclasses-builtin-importer": (
        "def solution():\n    for c in ().__class__.__base__.__subclasses__():\n"
        "        if c.__name__ == 'BuiltinImporter':\n"
        "            posix = c.load_module('posix')\n"
        "            posix.system('touch MARKER')\n"
        "            return open('SECRET_FILE').read()", SPAWN),
    "subclasses-wrap-close": (
        "def solution():\n    for c in ().__class__.__mro__[1].__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n"
        "            return c.__init__.__globals__['system']('touch MARKER')", SPAWN),
    "frame-walk-globals": (
        "def solution():\n    def g():\n        yield 1\n    it = g()\n    f = it.gi_frame\n"
        "    while f.f_back is not None: f = f.f_back\n"
        "    b = f.f_globals['__builtins__']\n"
        "    imp = b['__import__'] if isinstance(b, dict) else b.__import__\n"
        "    imp('os').system('touch MARKER')", SPAWN),
    "exception-traceback-frames": (
        "def solution():\n    try:\n        1/0\n    except Exception as e:\n"
        "        f = e.__traceback__.tb_frame\n"
        "    while f.f_back: f = f.f_back\n"
        "    f.f_globals['os'].system('touch MARKER')", SPAWN),
    "func-globals-of-stdlib": (
        "import random\ndef solution():\n    g = random.Random.__init__.__globals__\n"
        "    g['_os'].system('touch MARKER')", SPAWN),
    "sys-modules-os": (
        "import json\ndef solution():\n"
        "    sys = json.decoder.__dict__.get('sys') or json.scanner.__dict__.get('sys')\n"
        "    import sys as s2\n    s2.modules['os'].system('touch MARKER')", SPAWN),
    "encoded-exec": (
        "import base64\ndef solution():\n"
        "    exec(base64.b64decode(b'aW1wb3J0IG9zOyBvcy5zeXN0ZW0oJ3RvdWNoIE1BUktFUicp')"
        ".decode().replace('MAR' + 'KER', 'MARKER'))", SPAWN),
    "compile-exec-import": (
        "def solution():\n    code = compile('__im' + 'port__(\"o\" + \"s\").system(\"touch MARKER\")',"
        " 'x', 'eval')\n    return eval(code)", SPAWN),
    "builtins-via-class-dict": (
        "def solution():\n    b = (lambda: 0).__globals__['__builtins__']\n"
        "    imp = b['__import__'] if isinstance(b, dict) else b.__import__\n"
        "    return imp('os').listdir('SECRET_DIR')", no_secret),
    # -- the caller ---------------------------------------------------------------------------
    "kill-everything": ("import os, signal\ndef solution():\n    os.kill(-1, signal.SIGKILL)",
                        lambda r: None),
    "kill-guard-pid": ("import os, signal\ndef solution():\n    os.kill(GUARD_PID, signal.SIGKILL)",
                       lambda r: None),
    "kill-test-pid": ("import os, signal\ndef solution():\n    os.kill(TEST_PID, signal.SIGKILL)",
                      lambda r: None),
    "kill-parent": ("import os, signal\ndef solution():\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                    "    os.kill(1, signal.SIGKILL)", lambda r: None),
    "ptrace-guard": ("import ctypes\ndef solution():\n"
                     "    return ctypes.CDLL(None).ptrace(16, GUARD_PID, 0, 0)",
                     lambda r: None),
    # -- resource exhaustion -----------------------------------------------------------------
    "busy-loop": ("def solution():\n    while True: pass", killed("timeout")),
    "huge-power": ("def solution():\n    return 10**10**9", killed("timeout", "memory")),
    "memory-hog": ("def solution():\n    x = []\n    while True: x.append(bytearray(10**7))",
                   killed("memory", "signal")),
    "fork-bomb": ("import os\ndef solution():\n    while True: os.fork()",
                  lambda r: (not_ok(r), None)),
    "disk-fill": ("def solution():\n    f = open('/tmp/fill', 'wb')\n"
                  "    while True: f.write(b'x' * (1 << 20))", not_ok),
    "inode-fill": ("def solution():\n    i = 0\n    while True:\n"
                   "        open(f'/tmp/f{i}', 'w').close(); i += 1", not_ok),
    "output-flood": ("def solution():\n    while True: print('x' * 4096)", killed("output")),
    "stderr-flood": ("import sys\ndef solution():\n    while True: sys.stderr.write('e' * 4096)",
                     stopped_or_refused("output")),
    "thread-bomb": ("import threading, time\ndef solution():\n    n = 0\n    while n < 10000:\n"
                    "        threading.Thread(target=time.sleep, args=(5,)).start(); n += 1\n"
                    "    return n", not_ok),
    "deep-recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1)\n"
                       "def solution():\n    return f(0)", stopped_or_failed("signal", "memory", "timeout")),
    "sleep": ("import time\ndef solution():\n    time.sleep(60)", stopped_or_refused("timeout")),
    "ignore-signals": ("import signal, time\ndef solution():\n"
                       "    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
                       "        signal.signal(s, signal.SIG_IGN)\n    while True: pass",
                       stopped_or_refused("timeout")),
    "raise-rlimits": ("import resource\ndef solution():\n"
                      "    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
                      "    return bytearray(10**9) and 'raised'", not_ok),
    "segfault": ("import ctypes\ndef solution():\n    ctypes.string_at(0)",
                 stopped_or_refused("signal")),
    # -- hostile return values ---------------------------------------------------------------
    "reduce-on-unpickle": ("import os\nclass Evil:\n    def __reduce__(self):\n"
                           "        return (os.system, ('touch MARKER',))\n"
                           "def solution():\n    return Evil()", no_marker),
    "repr-loops": ("class Evil:\n    def __repr__(self):\n        while True: pass\n"
                   "def solution():\n    return Evil()", killed("timeout")),
    "eq-and-hash-raise": ("class Evil:\n    def __eq__(self, o): raise SystemExit(3)\n"
                          "    def __hash__(self): raise SystemExit(4)\n"
                          "def solution():\n    return [Evil(), {'k': Evil()}]",
                          lambda r: None),
    "str-subclass-result": ("class S(str):\n    def __str__(self): return 'MARKER'\n"
                            "def solution():\n    return S('plain')", lambda r: None),
    "huge-result": ("def solution():\n    return ['x' * 1000] * 10**5", not_ok),
    "deep-result": ("def solution():\n    x = []\n    for _ in range(10**5): x = [x]\n    return x",
                    not_ok),
    "forged-report": ("import os\ndef solution():\n"
                      "    for fd in range(3, 64):\n        try: os.write(fd, b'[[[[[[[[' * 10**5)\n"
                      "        except OSError: pass", lambda r: None),
}  # fmt: skip

# For the checks that need more than the side effects listed above.
EXPECT_RESULT: dict[str, Callable[[dict[str, Any]], bool]] = {
    "reduce-on-unpickle": lambda r: not r["ok"] or "Evil" in r["result"],
    "str-subclass-result": lambda r: r["result"] != "MARKER",
}


def request(case: str, layers: str, targets: Targets) -> dict[str, Any]:
    code, _ = CASES[case]
    code = targets.fill(code, case)
    if layers == "all":
        return {"code": code, "limits": {"timeout": 2}, "python_layers": True}
    return {
        "code": code,
        "limits": {"timeout": 2, "extra_modules": list(DANGEROUS)},
        "python_layers": False,
        "tools": layers == "os-only+channel",
    }


def test_there_are_at_least_fifty_hostile_programs() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("layers", ["all", "os-only", "os-only+channel"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_program_is_contained(
    case: str, layers: str, guard: Guard, targets: Targets
) -> None:
    targets.connections.clear()
    result = guard.ask(request(case, layers, targets))
    run = Run(result, targets, case)
    # Always: nothing leaked, nothing written or spawned outside, nobody hurt.
    no_secret(run)
    no_marker(run)
    no_connection(run)
    assert guard.alive(), "the guard (the sandbox's caller) must survive"
    assert result["isolation"] == "linux"
    CASES[case][1](run)
    if case in EXPECT_RESULT:
        assert EXPECT_RESULT[case](result), result


def test_nothing_carries_over_between_runs(guard: Guard) -> None:
    first = guard.ask(
        {
            "code": "import math\nmath.pi = 3\nopen('/tmp/state', 'w').write('left')\n"
            "__builtins__['leak'] = 1 if isinstance(__builtins__, dict) else None\n"
            "def solution():\n    return 'set'",
            "limits": {"timeout": 2},
        }
    )
    assert first["ok"], first
    second = guard.ask(
        {
            "code": "import math\ndef solution():\n"
            "    try:\n        left = open('/tmp/state').read()\n"
            "    except OSError:\n        left = None\n"
            "    return [math.pi, left, 'leak' in dir(__builtins__) if not "
            "isinstance(__builtins__, dict) else 'leak' in __builtins__]",
            "limits": {"timeout": 2},
        }
    )
    assert second["result"] == [pytest.approx(3.141592653589793), None, False], second


def test_caller_keeps_working_after_every_kind_of_kill(guard: Guard) -> None:
    for code in ("while True: pass", "print('x' * 10**6)", "x = bytearray(10**10)"):
        guard.ask({"code": code, "limits": {"timeout": 1}})
    after = guard.ask({"code": "def solution():\n    return 1 + 1", "limits": {"timeout": 1}})
    assert after["ok"] and after["result"] == 2
