"""The sandbox worker: one fresh process per program, walled in before the program arrives.

Started by the host as `python -I -S -X utf8 _worker.py CONFIG_JSON` with stdin, stdout,
stderr and one more pipe (the result fd) as pipes; standard library only. It

1. imports the allowed modules (so the program's imports need no file access later),
2. moves into a private root that holds only the Python runtime, read-only (_root.py),
3. drops root, enters new user/pid/net/mount/ipc/uts/cgroup namespaces and forks: the
   child is pid 1 of an empty pid namespace, the parent only waits for it,
4. mounts a size-capped tmpfs on /tmp as the scratch dir, drops every capability, sets
   no_new_privs, applies Landlock (read the view, write scratch, no TCP, no signals out),
   rlimits, and a seccomp filter (no sockets, processes, exec, mounts, ...),
5. adds Python-level layers (audit hook, import allowlist) as defence in depth,
6. writes b"R" on the result fd (with the walls on, the outside half first writes b"P" and
   the child's pid, ten digits: the process the host stops) and waits for the program on stdin,
7. runs it as a fresh `__main__` (with `tools`, the tool channel's client, in its globals
   when the host serves the channel; else the channel's two fds are closed first), calls
   `solution()` if defined, and writes one JSON document on the result fd, made here
   inside the walls; then exits.

On a setup failure it writes b"E" and a JSON {"wall", "detail"} on the result fd and exits 3.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import linecache
import math
import mmap
import os
import resource
import signal
import sys
import traceback
import types
from typing import Any

PROGRAM = "<program>"
MAX_FD = 1 << 20  # above any descriptor held (RLIMIT_NOFILE's usual hard cap)
RESULT_FD = -1  # set from the config: the pipe the host reads the result from
# Freed before describing an error or reporting, so a MemoryError can still be reported.
# Address space only (RLIMIT_AS is the memory wall): never touched, so a fork copies and an
# exit frees no pages for it.
_RESERVE = [mmap.mmap(-1, 1 << 20)]


def main() -> None:
    global RESULT_FD
    cfg = json.loads(sys.argv[1])
    RESULT_FD = cfg["result_fd"]
    sys.path[:0] = cfg["sys_path"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _root
    import _walls

    sys.path.pop(0)
    try:
        for name in cfg["preload"]:
            # Allowed but not installed: the program gets the normal ImportError later.
            with contextlib.suppress(ImportError):
                __import__(name)
        if cfg["walls"]:
            build_walls(_walls, _root, cfg)
        else:  # unsafe, asked for by name: no OS walls, but still never root
            _walls.drop_root()
            _walls.die_with_parent(signal.SIGKILL)
            with _walls.step("rlimits", "setrlimit"):
                set_rlimits(cfg)
            os.chdir(cfg["scratch"])
    except _walls.WallError as exc:
        _send(b"E" + json.dumps({"wall": exc.wall, "detail": exc.detail}).encode())
        os._exit(3)
    serve(cfg)


def serve(cfg: dict) -> None:
    """Walled in: add the Python layers, say ready, run the one program, report, exit."""
    os.environ.clear()  # the worker's variables (thread counts for BLAS) are not the program's
    if "builtins" not in cfg:  # a fork server built them once, before forking
        prepare_python_layers(cfg)
    audit = cfg.pop("audit")  # from here on only the interpreter holds it
    if audit is not None:
        sys.addaudithook(audit)
    del audit
    _forget_the_sandbox_modules()
    sys.argv[:] = [PROGRAM]  # the worker's config (host paths) is not the program's business
    sys.orig_argv[:] = [PROGRAM]
    _send(b"R")
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    if not request.get("tools"):  # no server listens: the program gets no channel at all
        for fd in cfg["tool_fds"]:
            os.close(fd)
    report = run_program(request["code"], cfg, request.get("tools"))
    _RESERVE.clear()
    _finish(report, cfg)


# The sandbox's own modules, as the worker and the zygote import them (top-level).
OWN_MODULES = ("_worker", "_walls", "_root", "_seccomp", "_uidmap", "_zygote")


def _forget_the_sandbox_modules() -> None:
    """The program reaches sys.modules through many an allowed module (typing.sys...): none
    of the sandbox's modules may be found there, nor the worker's script as `__main__`."""
    for name in OWN_MODULES:
        _HELD.append(sys.modules.pop(name, None))
    _HELD.append(sys.modules["__main__"])
    sys.modules["__main__"] = types.ModuleType("__main__")


_HELD: list = []  # the modules taken out of sys.modules, kept alive for the code still running


def enter_run_walls(
    _walls: Any, _root: Any, cfg: dict, proc: int, rules: Any, seccomp_filter: bytes
) -> None:
    """A fork server's child, pid 1 of its own pid namespace, walls itself in for one run:
    its own user, mount and IPC namespaces, a scratch tmpfs, rlimits, no capabilities, the
    Landlock rules and seccomp filter the server built once."""
    global RESULT_FD
    RESULT_FD = cfg["result_fd"]
    cfg["processes_besides"] = 1
    _walls.enter_namespaces(_walls.RUN_NAMESPACES, proc)
    os.close(proc)
    _walls.die_with_parent(signal.SIGKILL)  # the server goes: so does this run
    _finish_walls(_walls, _root, cfg, rules, seccomp_filter)


def build_walls(_walls: Any, _root: Any, cfg: dict) -> None:
    proc = _root.enter_private_root(cfg["readable"], cfg["hidden"])
    _walls.drop_root()
    _walls.enter_namespaces(_walls.NAMESPACES, proc)
    # After the credential changes above, which would clear it: die with the host thread
    # that started this worker, so no worker outlives its host.
    _walls.die_with_parent(signal.SIGKILL)
    with _walls.step("namespaces", "fork into the new pid namespace"):
        gate, release = os.pipe()
        child = os.fork()
    if child:
        # Tell the host which process runs the program: it stops that one, this half reaps
        # it and exits, and the host reaps this half. Killing both at once would orphan the
        # child to whoever adopts orphans, which may never reap it (a container's pid 1).
        _send(b"P" + b"%010d" % child)
        supervise(child)  # closes `release`: the child goes on
    # pid 1 of the new pid namespace from here on; wait until the host knows our pid, so
    # its "P" always comes before our "R".
    os.close(proc)
    os.close(release)
    os.read(gate, 1)
    os.close(gate)
    _walls.die_with_parent(signal.SIGKILL)
    rules = _walls.LandlockRules(["/"])  # the private root: nothing but the runtime
    _finish_walls(_walls, _root, cfg, rules, _walls.seccomp_filter())


def _finish_walls(_walls: Any, _root: Any, cfg: dict, rules: Any, seccomp_filter: bytes) -> None:
    """The walls every run enters for itself, in its own mount namespace: a scratch tmpfs,
    no capabilities, Landlock, rlimits, seccomp.

    The rlimits come after Landlock has taken its descriptors and they are closed, so the
    program's descriptor cap counts only what the program itself holds."""
    over = _root.keep_over_scratch()
    _walls.mount_scratch("/tmp", cfg["scratch_bytes"])
    _root.attach_over_scratch(over)
    with _walls.step("scratch", "chdir(/tmp)"):
        os.chdir("/tmp")
    _walls.drop_capabilities()
    rules.restrict(["/tmp", "/dev/null"])
    rules.close()
    with _walls.step("rlimits", "setrlimit"):
        set_rlimits(cfg)
    _walls.install_seccomp(seccomp_filter)


def supervise(child: int) -> None:
    """The namespace's outside half: hold nothing open, wait, pass on how the child ended."""
    os.closerange(0, MAX_FD)  # one close_range(2): there is no /proc to list them from
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


OPEN_FILES = 64  # descriptors a program may hold, its three standard streams and report included


def set_rlimits(cfg: dict) -> None:
    cpu = math.ceil(cfg["timeout"]) + 1  # the host's wall-clock timer comes first
    limits = {
        resource.RLIMIT_AS: cfg["memory_bytes"],
        resource.RLIMIT_CPU: cpu,
        resource.RLIMIT_FSIZE: cfg["scratch_bytes"],
        resource.RLIMIT_NOFILE: OPEN_FILES,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_MSGQUEUE: 0,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_SIGPENDING: 64,
        # Counted per user namespace: this process, and a worker's waiting parent, which
        # shares it (a fork server's child has a user namespace of its own).
        resource.RLIMIT_NPROC: cfg["threads"] + cfg.get("processes_besides", 2),
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))  # soft = hard: cannot be raised again
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail with EFBIG


# -- defence in depth: Python-level layers ------------------------------------------------

_BLOCKED_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.", "socket.", "ctypes.",
    "pty.", "os.putenv", "os.unsetenv", "os.setuid", "os.chroot", "sys.addaudithook",
    "sys._current_frames", "mmap.",
)  # fmt: skip


def prepare_python_layers(cfg: dict) -> None:
    """The program's builtins (an import allowlist) and the audit hook `serve` installs;
    made once per fork server, and copied into each child by the fork."""
    # Internal helpers the C code of allowed modules imports through the program's own
    # __import__ (datetime.strptime imports _strptime): allowed too, and already loaded.
    allowed = frozenset(cfg["allowed_modules"]) | frozenset(cfg["internal_modules"])
    setting = cfg["allow_setting"]
    real_import = builtins.__import__
    blocked = _BLOCKED_EVENTS  # held by the closure, not looked up in a module at each event

    def audit(event: str, args: tuple) -> None:
        if event.startswith(blocked):
            raise PermissionError(f"{event} is not allowed in the sandbox")

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level:
            raise ImportError("relative imports are not allowed in the sandbox")
        if name not in allowed and name.partition(".")[0] not in allowed:
            raise ImportError(
                f"module '{name}' is not allowed in the sandbox; allow it with {setting}",
                name=name,
            )
        return real_import(name, globals, locals, fromlist, level)

    safe = dict(builtins.__dict__)
    safe["__import__"] = guarded_import
    for name in ("breakpoint", "__loader__", "__spec__", "open" if cfg["no_open"] else ""):
        safe.pop(name, None)
    if not cfg["python_layers"]:  # tests use this to show the OS walls hold on their own
        cfg["builtins"], cfg["audit"] = builtins, None
        return
    cfg["builtins"], cfg["audit"] = safe, audit


# -- the program ---------------------------------------------------------------------------


def run_program(code: str, cfg: dict, tools: str | None = None) -> dict:
    report: dict = {"ok": False, "result": None, "error": None, "memory": False}
    namespace = sys.modules["__main__"].__dict__  # a fresh module (_forget_the_sandbox_modules)
    namespace["__builtins__"] = cfg["builtins"]
    linecache.cache[PROGRAM] = (len(code), None, code.splitlines(True), PROGRAM)
    try:
        if tools is not None:
            namespace.update(tool_globals(tools, cfg))
        compiled = compile(code, PROGRAM, "exec", dont_inherit=True)
        exec(compiled, namespace)
        solution = namespace.get("solution")
        value = solution() if callable(solution) else None
        report["result"] = to_json(value, cfg)
        report["ok"] = True
    except SystemExit as exc:
        report["ok"] = exc.code in (None, 0)
        if not report["ok"]:
            report["error"] = describe(exc)
    except MemoryError as exc:
        report["memory"] = True
        report["error"] = describe(exc)
    except BaseException as exc:
        report["error"] = describe(exc)
    return report


def tool_globals(source: str, cfg: dict) -> dict:
    """The tool channel's client as the program's `tools` (and its EXPORTS beside it): the
    host's source, run here with the program's own builtins, so its imports pass the same
    allowlist. It is not in sys.modules, so `import tools` still fails."""
    module = types.ModuleType("tools")
    module.__dict__["__builtins__"] = cfg["builtins"]
    exec(compile(source, "<tools>", "exec", dont_inherit=True), module.__dict__)
    module.connect(*cfg["tool_fds"])
    names = {"tools": module}
    for name in getattr(module, "EXPORTS", ()):
        names[name] = getattr(module, name)
    return names


def describe(exc: BaseException) -> dict:
    # Each part on its own: after a runaway recursion or near the memory limit the traceback
    # may not fit in memory, but the type and message still say what happened.
    _RESERVE.clear()
    info = {"type": "Exception", "message": "<unprintable exception>", "traceback": ""}
    with contextlib.suppress(BaseException):
        kind = type(exc).__qualname__
        if type(exc).__module__ not in ("builtins", "__main__"):
            kind = f"{type(exc).__module__}.{kind}"
        info["type"] = kind
    info["message"] = _safe_str(exc)
    with contextlib.suppress(BaseException):
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if f.filename == PROGRAM]
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(mine)]
        lines += traceback.format_exception_only(exc)
        info["traceback"] = _unicode("".join(lines)[-8000:])
    return info


def _safe_str(value: object) -> str:
    try:
        return _unicode(str(value)[:4000])
    except BaseException:
        return "<unprintable>"


def to_json(value: object, cfg: dict) -> object:
    """Plain JSON values, made here: containers walked with bounds, the rest as repr text."""
    budget = [cfg["result_items"]]
    max_depth = cfg["result_depth"]

    def walk(v: object, depth: int) -> object:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("the result has too many items")
        t = type(v)
        if v is None or t is bool:
            return v
        if t is str:
            return _unicode(v)  # type: ignore[arg-type]
        if t is int:
            return v if v.bit_length() <= 128 else _text(v)  # type: ignore[attr-defined]
        if t is float:
            return v if math.isfinite(v) else repr(v)  # type: ignore[arg-type]
        if depth >= max_depth:
            raise ValueError(f"the result is nested deeper than {max_depth} levels")
        if t in (list, tuple):
            return [walk(x, depth + 1) for x in v]  # type: ignore[attr-defined]
        if t is dict:
            return {
                _unicode(k) if type(k) is str else _text(k): walk(x, depth + 1)
                for k, x in v.items()  # type: ignore[attr-defined]
            }
        if t in (set, frozenset):
            return [walk(x, depth + 1) for x in v]  # type: ignore[attr-defined]
        return _text(v)

    return walk(value, 0)


def _unicode(text: str) -> str:
    """Text JSON can carry as Unicode: a lone surrogate is shown as its escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _text(value: object) -> str:
    try:
        module = type(value).__module__
        if module in ("fractions", "decimal"):
            return str(value)
        return _unicode(repr(value)[:10000])
    except BaseException:
        return "<unrepresentable value>"


def _send(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(RESULT_FD, view) :]


def _finish(report: dict, cfg: dict) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    try:
        blob = json.dumps(report, ensure_ascii=False).encode("utf-8", "backslashreplace")
    except BaseException as exc:
        report["result"], report["ok"] = None, False
        report["error"] = {"type": "ResultError", "message": _safe_str(exc), "traceback": ""}
        blob = json.dumps(report).encode()
    if len(blob) > cfg["result_bytes"]:
        report["result"], report["ok"] = None, False
        report["error"] = {
            "type": "ResultError",
            "message": f"the result is larger than {cfg['result_bytes']} bytes as JSON",
            "traceback": "",
        }
        blob = json.dumps(report, ensure_ascii=False).encode("utf-8", "backslashreplace")
    _send(blob)
    # Close the pipes before exiting, so the host sees the end now, not after teardown.
    for fd in (1, 2, RESULT_FD):
        with contextlib.suppress(OSError):
            os.close(fd)
    os._exit(0)


if __name__ == "__main__":
    main()
