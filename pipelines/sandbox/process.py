"""One sandbox worker process, seen from the host: spawn it, wait until it is walled in, send
it one program, collect what comes back under the caps, and stop and reap it.

With the walls on, a worker is two processes: the outside half (in the host's pid
namespace) and the walled child that runs the program, pid 1 of its own namespace. The
host stops the child only (it learns its pid from the outside half, and holds it as a
pidfd); the outside half reaps it and exits; the host reaps the outside half. Nothing is
orphaned, so nothing is left as a zombie under a parent that does not reap. Used workers
are reaped off the caller's path by `reaper`, which `Sandbox.close()` and interpreter exit
drain.

Only bytes cross back: the host parses bounded JSON and never unpickles anything or
touches an object the program made.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipelines.errors import LlamapipeError, UnsupportedSystemError
from pipelines.sandbox.cgroups import RunCgroup
from pipelines.sandbox.limits import ALLOW_SETTING, Limits
from pipelines.sandbox.report import build_result
from pipelines.sandbox.result import Isolation, Killed, SandboxResult
from pipelines.sandbox.runtime import hidden_paths, readable_paths, sys_path_for
from pipelines.sandbox.toolpipe import ToolPipes, ToolServer

WORKER = Path(__file__).with_name("_worker.py")
UNPRIVILEGED_UID = 65534  # as in _walls: what a root caller's programs run as
READY_TIMEOUT = 30.0
# Loaded before the walls go up so the program's imports (and lazy ones inside the
# standard library) need no file access; not importable by the program unless allowed.
PRELOAD = ("_strptime", "encodings.idna", "encodings.cp949", "encodings.euc_kr")


class SandboxError(LlamapipeError):
    """The sandbox machinery itself failed (not the program)."""


class SandboxUnavailableError(UnsupportedSystemError):
    """This system cannot build the walls; `wall` names the one that failed, if known."""

    wall = ""


# What a user can do about each wall; every hint ends with `sandbox check` and the one
# setting that runs without the walls, which every front end (CLI, REPL, web, evals) reads.
UNSAFE = "or, accepting the risk, LLAMAPIPE_SANDBOX_ISOLATION=unsafe (no OS walls)"
CHECK = "`llamapipe sandbox check` shows each wall on this machine"
_WALL_HINTS = {
    "namespaces": "allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; "
    "on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)",
    "private root": "the kernel must allow mounts in a user namespace (Linux 5.12+ for "
    "mount_setattr)",
    "landlock": "boot Linux 5.13+ with Landlock among the LSMs (lsm=...,landlock)",
    "seccomp": "a kernel built with CONFIG_SECCOMP_FILTER",
}


def wall_error(info: dict[str, Any]) -> SandboxUnavailableError:
    """The worker's or zygote's {"wall", "detail"} as the user's error, with a next step."""
    wall = str(info.get("wall") or "setup")
    first = _WALL_HINTS.get(wall)
    hint = f"{first}; {CHECK}; {UNSAFE}" if first else f"{CHECK}; {UNSAFE}"
    error = SandboxUnavailableError(
        f"cannot build the sandbox's {wall} wall: {info.get('detail') or 'no detail given'}",
        hint=hint,
    )
    error.wall = wall
    return error


def parse_wall_error(raw: bytes) -> SandboxUnavailableError:
    try:
        info = json.loads(raw or b"{}")
    except ValueError:
        info = {}
    return wall_error(info if isinstance(info, dict) else {})


# Libraries that start thread pools when imported (numpy's OpenBLAS) start none: a process
# with threads can neither enter a user namespace nor be forked whole. The program's
# environment is emptied before it runs.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker_config(limits: Limits, *, walls: bool, python_layers: bool) -> dict[str, Any]:
    """What a worker or the fork server's children need to know, as JSON."""
    return {
        "walls": walls,
        "timeout": limits.timeout,
        "memory_bytes": limits.memory_mb << 20,
        "scratch_bytes": limits.scratch_mb << 20,
        "threads": limits.threads,
        "allowed_modules": list(limits.allowed_modules),
        "allow_setting": ALLOW_SETTING,
        "preload": [*limits.allowed_modules, *PRELOAD],
        "internal_modules": list(PRELOAD),
        "sys_path": sys_path_for(limits.extra_modules),
        "readable": readable_paths(limits.extra_modules),
        "hidden": hidden_paths(),
        "no_open": False,
        "python_layers": python_layers,
        "result_bytes": limits.result_kb << 10,
        "result_depth": limits.result_depth,
        "result_items": limits.result_items,
    }


class RunProcess:
    """A walled process waiting for exactly one program, however it was made: a fresh
    worker (`Worker`) or a fork server's child (forkserver.ForkedWorker)."""

    isolation: Isolation
    result_fd: int
    pipes: ToolPipes  # the run's tool channel, served only if the run brings a server
    cgroup: RunCgroup | None = None  # its own, where the memory wall is a cgroup

    @property
    def child_pid(self) -> int | None:
        """The pid (in the host's namespace) of the process that runs the program."""
        raise NotImplementedError

    def _send_program(self, data: bytes) -> None:
        raise NotImplementedError

    def _release_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def _output_fds(self) -> tuple[int, int]:
        """(stdout, stderr) read ends."""
        raise NotImplementedError

    def _returncode(self) -> int:
        """Wait until the process has ended; its exit status as subprocess reports it."""
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def dispose(self) -> None:
        raise NotImplementedError

    def execute(self, code: str, limits: Limits, tools: ToolServer | None = None) -> SandboxResult:
        started = time.perf_counter()
        self.pipes.start(tools)
        request = {"code": code, "tools": tools.client_source() if tools else None}
        with contextlib.suppress(BrokenPipeError):  # it died already; the status says how
            self._send_program(json.dumps(request).encode())
        deadline = started + limits.timeout
        out_cap = limits.output_kb << 10
        result_cap = (limits.result_kb << 10) + 65536
        streams = {fd: bytearray() for fd in self._output_fds()}
        result = bytearray()
        killed: Killed | None = None
        poller = select.poll()
        open_fds = {*streams, self.result_fd}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        while open_fds and killed is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                killed = "timeout"
                break
            for fd, _ in poller.poll(remaining * 1000):
                data = os.read(fd, 65536)
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd == self.result_fd:
                    result += data
                    if len(result) > result_cap:
                        killed = "output"
                else:
                    streams[fd] += data
                    if sum(map(len, streams.values())) > out_cap:
                        killed = "output"
        duration_ms = (time.perf_counter() - started) * 1000
        if killed is not None or result[-1:] != b"}":
            self.kill()  # stopped, or died: the exit status says how
            returncode = self._returncode()
        else:
            returncode = 0  # it reported and closed its pipes; the reaper collects it
        if tools is not None:
            # Its end of the channel closes only when it is gone: make sure it is, so the
            # server sees end of file now (a reported run is about to be discarded anyway).
            self.kill()
            self.pipes.finish()
        stdout, stderr = (bytes(b) for b in streams.values())
        if killed is None and returncode != 0 and self.cgroup and self.cgroup.oom_killed():
            killed = "memory"  # the kernel stopped it at its cgroup's memory limit
        return build_result(
            bytes(result), stdout, stderr, killed, returncode, duration_ms, limits, self.isolation
        )


class Worker(RunProcess):
    """One worker process: spawned, walled, waiting for exactly one program."""

    def __init__(self, limits: Limits, isolation: Isolation, python_layers: bool = True) -> None:
        self.isolation = isolation
        self.scratch: str | None = None
        if isolation == "unsafe":
            self.scratch = tempfile.mkdtemp(prefix="llamapipe-sandbox-")
            if os.geteuid() == 0:  # the worker drops to nobody, who must own its scratch
                os.chown(self.scratch, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        read_fd, write_fd = os.pipe()
        self.pipes = ToolPipes()
        cfg = worker_config(limits, walls=isolation == "linux", python_layers=python_layers)
        cfg.update(result_fd=write_fd, scratch=self.scratch, tool_fds=self.pipes.child_ends)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-X", "utf8", str(WORKER), json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd, *self.pipes.child_ends),
                # None of the caller's environment. One malloc arena: threads would each
                # reserve 64 MiB of address space and hit memory_mb long before `threads`.
                env={"LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "1", **ONE_THREAD},
                cwd="/",
                start_new_session=True,  # its own process group, killed as one
            )
        except BaseException:
            self.pipes.close()
            raise
        finally:
            os.close(write_fd)
            self.pipes.close_child_ends()
        self.result_fd = read_fd
        self.inner: int | None = None  # pidfd of the process that runs the program (walls on)
        self.inner_pid: int | None = None

    @property
    def child_pid(self) -> int | None:
        return self.inner_pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        try:
            first = _read_some(self.result_fd, 1, timeout)
            if first == b"P":
                self.inner = self._open_inner(_read_some(self.result_fd, 10, timeout))
                first = _read_some(self.result_fd, 1, timeout)
        except BaseException:  # Ctrl-C while it starts: it must not outlive us
            self.dispose()
            raise
        if first == b"R":
            return
        rest = _read_some(self.result_fd, 65536, 2.0) if first == b"E" else b""
        err = self._stderr_now()
        self.dispose()
        if first == b"E":
            raise parse_wall_error(rest)
        raise SandboxError(
            "the sandbox worker did not start" + (f": {err.strip()[-500:]}" if err else ""),
            hint="set LLAMAPIPE_DEBUG=1 and report this with the output",
        )

    def _open_inner(self, digits: bytes) -> int | None:
        """A pidfd for the walled child, once it is sure to be ours (its parent is our worker,
        which we have not reaped, so neither pid can have been reused)."""
        try:
            pidfd = os.pidfd_open(int(digits))
        except (ValueError, OSError):
            return None
        try:
            stat = Path(f"/proc/{int(digits)}/stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            parent = -1
        if parent != self.proc.pid:
            os.close(pidfd)
            return None
        self.inner_pid = int(digits)
        return pidfd

    def _stderr_now(self) -> str:
        assert self.proc.stderr is not None
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")

    def _send_program(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.close()

    def _output_fds(self) -> tuple[int, int]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        return self.proc.stdout.fileno(), self.proc.stderr.fileno()

    def _returncode(self) -> int:
        return self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Stop the program now. With the walls on, only the inside process is killed: the
        outside half reaps it and exits, so nothing is orphaned (see _worker.build_walls)."""
        if self.inner is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.inner, signal.SIGKILL)
                return
        self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def dispose(self) -> None:
        self.kill()
        try:
            self.proc.wait(timeout=5)
            self._release_cgroup()
        except subprocess.TimeoutExpired:  # the outside half is stuck: stop the group
            self._kill_group()
            self.proc.wait()
        if self.inner is not None:
            os.close(self.inner)
            self.inner = None
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        with contextlib.suppress(OSError):
            os.close(self.result_fd)
        self.pipes.close()
        if self.scratch:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)


class _Reaper:
    """Kills and collects used workers off the caller's path (a run need not wait)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[RunProcess] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._done = threading.Condition(self._lock)

    def dispose(self, worker: RunProcess) -> None:
        worker.kill()  # at once: nothing of a run outlives it, even while queued
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="llamapipe-sandbox-reaper", daemon=True
                )
                self._thread.start()
        self._queue.put(worker)

    def drain(self, timeout: float = 10.0) -> None:
        """Collect every queued worker now (at close and at exit: a process that exits
        with unreaped children hands them to whoever adopts orphans)."""
        while True:
            try:
                worker = self._queue.get_nowait()
            except queue.Empty:
                break
            self._collect(worker)
        with self._lock:  # one may be in the reaper thread's hands
            self._done.wait_for(lambda: self._pending == 0, timeout)

    def _collect(self, worker: RunProcess) -> None:
        try:
            worker.dispose()
        finally:
            with self._lock:
                self._pending -= 1
                self._done.notify_all()

    def _loop(self) -> None:
        while True:
            self._collect(self._queue.get())


reaper = _Reaper()
atexit.register(reaper.drain)


def _read_some(fd: int, n: int, timeout: float) -> bytes:
    poller = select.poll()  # no epoll instance to make and close per call
    poller.register(fd, select.POLLIN)
    if not poller.poll(timeout * 1000):
        return b""
    return os.read(fd, n)
