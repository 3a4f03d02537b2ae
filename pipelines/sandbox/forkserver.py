"""The host side of the sandbox's fork server (`_zygote.py`): one zygote per Sandbox, and
the walled children it forks, one per program.

A fresh worker costs a new interpreter importing the allowed modules (~50 ms); a child of
the zygote costs a fork and its own walls (a few ms), so back-to-back runs no longer wait
for interpreters to start. The zygote never runs a program: each child walls itself in
(its own pid, mount and IPC namespaces, scratch tmpfs, rlimits, no capabilities, Landlock,
seccomp, no environment) before it reads one.

The zygote is started from a thread that lives as long as the fork server, because it dies
with the thread that started it (PR_SET_PDEATHSIG), and its children die with it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import weakref
from pathlib import Path

from pipelines.sandbox.limits import Limits
from pipelines.sandbox.process import (
    ONE_THREAD,
    READY_TIMEOUT,
    RunProcess,
    SandboxError,
    _read_some,
    parse_wall_error,
    worker_config,
)
from pipelines.sandbox.toolpipe import ToolPipes

ZYGOTE = Path(__file__).with_name("_zygote.py")
EXIT_TIMEOUT = 5.0  # seconds to wait for the zygote to report a killed child's end


_running: weakref.WeakSet[ForkServer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """A host that exits without closing its Sandbox still stops its zygote the clean way
    (EOF, then reap), rather than leaving it to die with the exiting thread unreaped."""
    for server in list(_running):
        server.close()


class ForkServer:
    """A running zygote: `spawn()` returns a walled child waiting for one program."""

    def __init__(self, limits: Limits, python_layers: bool = True) -> None:
        self.limits = limits
        self.python_layers = python_layers
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._theirs = theirs
        self._spawn_lock = threading.Lock()  # one fork request answered at a time
        self._replies: list[tuple[bytes, list[int]]] = []
        self._statuses: dict[int, int] = {}
        self._forgotten: set[int] = set()  # disposed before the zygote said how they ended
        self._changed = threading.Condition()
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._keeper = threading.Thread(
            target=self._keep, name="llamapipe-sandbox-zygote", daemon=True
        )
        self._reader: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """False once the zygote has gone (closed, or killed from outside). Asks the control
        socket itself, not only the reader thread, which may not have run yet since the
        zygote closed it: only the zygote holds the other end (its outside half closes
        everything), and an exiting process releases its files before the kernel kills its
        children (in the zygote's pid namespace, and by PR_SET_PDEATHSIG), so from the moment
        this says False, every child of this server is dead or about to be."""
        if self._closed:
            return False
        fd = self._sock.fileno()
        if fd < 0:
            return False
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)  # POLLHUP and POLLERR come unasked
        return not poller.poll(0)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the zygote and wait until it is ready; SandboxUnavailableError when this
        system cannot build its walls."""
        self._keeper.start()
        try:
            self._started.wait()
            if self._error is not None:
                raise self._error
            message, _ = self._receive(timeout)
        except BaseException:
            # Ctrl-C while the zygote starts: nobody else knows of it yet (not the Sandbox,
            # not `_running`), so stop and reap it here, or it dies unreaped with this thread.
            self.close()
            raise
        if message[:1] == b"E":
            self.close()
            raise parse_wall_error(message[1:])
        if message != b"R":
            self.close()
            raise SandboxError(
                "the sandbox's fork server did not start",
                hint="set LLAMAPIPE_DEBUG=1 and report this with the output",
            )
        self._reader = threading.Thread(
            target=self._read, name="llamapipe-sandbox-zygote-reader", daemon=True
        )
        self._reader.start()
        _running.add(self)

    def _keep(self) -> None:
        cfg = worker_config(self.limits, walls=True, python_layers=self.python_layers)
        cfg["control_fd"] = self._theirs.fileno()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-X", "utf8", str(ZYGOTE), json.dumps(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(self._theirs.fileno(),),
                env={"LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "1", **ONE_THREAD},
                cwd="/",
                start_new_session=True,
            )
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        finally:
            self._theirs.close()
        self._started.set()
        self._stop.wait()  # this thread's life is the zygote's (PR_SET_PDEATHSIG)
        self._shutdown()

    # -- messages from the zygote -------------------------------------------------------------

    def _receive(self, timeout: float | None) -> tuple[bytes, list[int]]:
        self._sock.settimeout(timeout)
        try:
            message, fds, _, _ = socket.recv_fds(self._sock, 65536, 1)
        except (TimeoutError, OSError):
            return b"", []
        return message, fds

    def _read(self) -> None:
        """Sort what the zygote says: fork replies for `spawn`, exit statuses for runs."""
        while True:
            message, fds = self._receive(None)
            with self._changed:
                if not message:  # the zygote is gone
                    self._closed = True
                    self._changed.notify_all()
                    return
                if message[:1] == b"X":
                    pid, status = json.loads(message[1:])
                    if pid in self._forgotten:
                        self._forgotten.discard(pid)
                    else:
                        self._statuses[pid] = status
                else:
                    self._replies.append((message, fds))
                self._changed.notify_all()

    def spawn(self, timeout: float = READY_TIMEOUT) -> ForkedWorker:
        """Fork a child for one program and wait until it is walled in."""
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        pipes = ToolPipes()
        theirs = [stdin_r, out_w, err_w, result_w]
        try:
            with self._spawn_lock:
                if self._closed:
                    raise SandboxError(
                        "the sandbox's fork server has stopped", hint="make a new Sandbox()"
                    )
                socket.send_fds(self._sock, [b"F"], [*theirs, *pipes.child_ends])
                message, fds = self._reply(timeout)
        except BaseException:
            for fd in (stdin_w, out_r, err_r, result_r):
                os.close(fd)
            pipes.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
            pipes.close_child_ends()
        if message[:1] != b"S" or len(fds) != 1:
            for fd in (stdin_w, out_r, err_r, result_r, *fds):
                os.close(fd)
            pipes.close()
            if message[:1] == b"E":
                raise parse_wall_error(message[1:])
            raise SandboxError(
                "the sandbox's fork server stopped answering",
                hint="set LLAMAPIPE_DEBUG=1 and report this with the output",
            )
        worker = ForkedWorker(
            self, int(message[1:]), fds[0], stdin_w, out_r, err_r, result_r, pipes
        )
        worker.wait_ready(timeout)
        return worker

    def _reply(self, timeout: float) -> tuple[bytes, list[int]]:
        with self._changed:
            self._changed.wait_for(lambda: self._replies or self._closed, timeout)
            return self._replies.pop(0) if self._replies else (b"", [])

    def exit_status(self, pid: int, timeout: float = EXIT_TIMEOUT) -> int | None:
        """The child's wait status once the zygote has reaped it; None if it did not say."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._statuses or self._closed, timeout)
            return self._statuses.pop(pid, None)

    def forget(self, pid: int) -> None:
        """The caller will not ask how `pid` ended: drop its status now or when it comes."""
        with self._changed:
            if self._statuses.pop(pid, None) is None:
                self._forgotten.add(pid)

    # -- stopping ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the zygote: it kills and reaps its children, then exits; reap it."""
        _running.discard(self)
        self._stop.set()
        if self._keeper.ident is None:  # never started
            self._theirs.close()
            self._sock.close()
        elif self._keeper.is_alive():
            self._keeper.join(timeout=10)
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # EOF: the zygote cleans up and exits
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        self._sock.close()


class ForkedWorker(RunProcess):
    """A child of the zygote, walled in and waiting for its program. The host holds a
    pidfd of it (to stop it) and the ends of its six pipes; the zygote reaps it."""

    def __init__(
        self, server: ForkServer, pid: int, pidfd: int, stdin_w: int, out_r: int, err_r: int,
        result_r: int, pipes: ToolPipes,
    ) -> None:  # fmt: skip
        self.isolation = "linux"
        self.server = server
        self.pid = pid
        self.pidfd: int | None = pidfd
        self.stdin_w: int | None = stdin_w
        self.out_r, self.err_r = out_r, err_r
        self.result_fd = result_r
        self.pipes = pipes
        self.reported = False  # the zygote's word on how it ended was taken

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        try:
            first = _read_some(self.result_fd, 1, timeout)
        except BaseException:
            self.dispose()
            raise
        if first == b"R":
            return
        rest = _read_some(self.result_fd, 65536, 2.0) if first == b"E" else b""
        self.dispose()
        if first == b"E":
            raise parse_wall_error(rest)
        raise SandboxError(
            "a sandbox child of the fork server did not start",
            hint="set LLAMAPIPE_DEBUG=1 and report this with the output",
        )

    def _send_program(self, data: bytes) -> None:
        assert self.stdin_w is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.stdin_w, view) :]
        finally:
            os.close(self.stdin_w)
            self.stdin_w = None

    @property
    def child_pid(self) -> int | None:
        """`pid` is the zygote's view; the pidfd's NSpid, at this process's own depth, is
        ours (the host may itself be in a pid namespace below /proc's: the red-team guard)."""
        if self.pidfd is None:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            depth = len(_nspid(Path("/proc/self/status").read_text())) - 1
            return _nspid(Path(f"/proc/self/fdinfo/{self.pidfd}").read_text())[depth]
        return None

    def _output_fds(self) -> tuple[int, int]:
        return self.out_r, self.err_r

    def _returncode(self) -> int:
        status = self.server.exit_status(self.pid)
        self.reported = True
        if status is None:
            return -signal.SIGKILL  # the zygote is gone: so is the child (it dies with it)
        return os.waitstatus_to_exitcode(status)

    def alive(self) -> bool:
        """Still waiting for its program. Not once its zygote has gone: the kernel kills the
        zygote's children only after the host can see it go, so a child may still be
        running for a while, take its program and die before it reports (a run right after
        the zygote was killed came back "Killed"). Nor once it has exited: its pidfd is
        readable from then on, while signal 0 still reaches it as a zombie."""
        if self.pidfd is None or not self.server.alive:
            return False
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def dispose(self) -> None:
        self.kill()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
            if not self.reported:
                self.server.forget(self.pid)
        for fd in (self.stdin_w, self.out_r, self.err_r, self.result_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin_w = None
        self.pipes.close()
        self._release_cgroup()


def _nspid(text: str) -> list[int]:
    """The NSpid line of a status or pidfd fdinfo: the pid in each pid namespace, outermost
    (that of the /proc mount) first."""
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    raise ValueError("no NSpid line")
