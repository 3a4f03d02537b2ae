"""The host side: a pool of pre-walled processes, one per program.

A run takes a process that is already walled in and waiting (warm), sends it the program,
and hands the used one to the reaper whatever happened. A background thread keeps
`workers` replacements ready, so a run costs only the program and a few pipe round-trips.
Nothing survives a run: each process runs exactly one program.

With the OS walls on, the processes are children of a fork server (forkserver.py: one
zygote per Sandbox that has imported the allowed modules once), so a replacement costs a
fork and its walls, a few milliseconds. Where a fork server cannot be built, and with
`isolation="unsafe"`, each is a fresh worker process (process.py), ~50 ms to start;
`Sandbox.engine` says which, and why.
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from pipelines.errors import LlamapipeError
from pipelines.sandbox.cgroups import RunCgroups, find_layout
from pipelines.sandbox.forkserver import ForkedWorker, ForkServer
from pipelines.sandbox.limits import Limits
from pipelines.sandbox.process import (
    CHECK,
    READY_TIMEOUT,
    UNSAFE,
    Isolation,
    RunProcess,
    SandboxError,
    SandboxUnavailableError,
    Worker,
    reaper,
)
from pipelines.sandbox.result import SandboxResult
from pipelines.sandbox.toolpipe import ToolServer

__all__ = ["Sandbox", "SandboxError", "SandboxUnavailableError", "check_system"]


class Sandbox:
    """Runs untrusted Python programs, one fresh walled-in process each.

        with Sandbox(limits=Limits(timeout=2)) as sb:
            sb.run("def solution():\\n    return 6 * 7").result   # 42

    `isolation="linux"` (the default) needs Linux with user namespaces, Landlock and
    seccomp, and refuses to start without them. `isolation="unsafe"` runs without OS
    walls (separate process, rlimits, Python-level guards only) and says so in every
    result. `run` is safe to call from several threads.

    `python_layers=False` drops the Python-level guards (audit hook, import allowlist)
    and leaves only the OS walls: the red-team tests use it to show those hold alone.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        workers: int = 2,
        isolation: Isolation = "linux",
        python_layers: bool = True,
        fork_server: bool = True,
    ) -> None:
        if isolation not in ("linux", "unsafe"):
            raise ValueError(f"isolation must be 'linux' or 'unsafe', not {isolation!r}")
        self.limits = limits or Limits()
        self.workers = max(0, workers)
        self.isolation: Isolation = isolation
        self.python_layers = python_layers
        self.fork_server = fork_server and isolation == "linux"
        self.engine = "not started"  # "fork server", or "per-run worker (why)"
        self.memory_wall = "not started"  # a cgroup per run, or RLIMIT_AS only (why)
        self._cgroups: RunCgroups | None = None
        self._server: ForkServer | None = None
        self._restart_lock = threading.Lock()
        self._ready: queue.SimpleQueue[RunProcess] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._started = False
        self._filler: threading.Thread | None = None
        self._busy: set[RunProcess] = set()  # running a program now, in any thread
        self._idle_again = threading.Condition(self._lock)

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build the first worker now, so a system without walls fails here, clearly."""
        with self._lock:
            if self._started:
                return
            if self.isolation == "linux":
                check_system()
                self._start_memory_wall()
            self._start_engine()
            first = self._new()
            self._started = True
            self._idle += 1
            self._ready.put(first)
            if self.workers:
                self._filler = threading.Thread(
                    target=self._fill, name="llamapipe-sandbox-pool", daemon=True
                )
                self._filler.start()

    def _start_memory_wall(self) -> None:
        layout, why = find_layout()
        if layout is not None:
            try:
                self._cgroups = RunCgroups(
                    layout, self.limits.memory_mb << 20, self.limits.threads + 1
                )
            except OSError as exc:
                why = f"cannot set up cgroups ({exc.strerror})"
        if self._cgroups is not None:
            self.memory_wall = self._cgroups.description
        else:
            self.memory_wall = (
                f"RLIMIT_AS only ({why}); the calls that allocate outside it are refused"
            )

    def _contain(self, worker: RunProcess) -> RunProcess:
        """Put a walled child in its own cgroup before its program arrives."""
        if self._cgroups is None:
            return worker
        pid = worker.child_pid
        try:
            if pid is None:
                raise OSError(0, "the walled child's pid is not known")
            worker.cgroup = self._cgroups.place(pid)
        except OSError as exc:
            worker.dispose()
            raise SandboxUnavailableError(
                f"cannot build the sandbox's memory cgroup wall: {exc.strerror or exc}",
                hint=f"{CHECK}; {UNSAFE}",
            ) from None
        return worker

    def _start_engine(self) -> None:
        if not self.fork_server:
            why = "isolation unsafe" if self.isolation == "unsafe" else "fork server off"
            self.engine = f"per-run worker ({why})"
            return
        # Known to `close` before it starts, so a Ctrl-C just as it is up still stops it.
        self._server = server = ForkServer(self.limits, self.python_layers)
        try:
            server.start()
        except (SandboxError, SandboxUnavailableError) as exc:  # the per-run worker may work
            self._server = None
            self.engine = f"per-run worker (no fork server here: {exc.message})"
            return
        self.engine = "fork server"

    def _new(self) -> RunProcess:
        """A walled process waiting for one program: forked, or a fresh worker."""
        if self._server is not None:
            if not self._server.alive and not self._closed:
                self._restart_server()
            return self._contain(self._server.spawn())
        worker = Worker(self.limits, self.isolation, self.python_layers)
        worker.wait_ready()
        return self._contain(worker)

    @staticmethod
    def _discard(worker: RunProcess) -> None:
        """A fork server's child is stopped and let go at once (its zygote reaps it); a
        worker process is reaped off the caller's path."""
        if isinstance(worker, ForkedWorker):
            worker.dispose()
        else:
            reaper.dispose(worker)

    def _restart_server(self) -> None:
        """The zygote went away (the OOM killer, a stray kill): start another, once per loss."""
        with self._restart_lock:
            if self._server is not None and not self._server.alive:
                self._server.close()
                server = ForkServer(self.limits, self.python_layers)
                server.start()
                self._server = server

    def run(self, code: str, *, tools: ToolServer | None = None) -> SandboxResult:
        """Run one program; never raises for anything the program does.

        With `tools` (pipelines.agent's Dispatcher, one per run), the program finds a
        `tools` object in its globals whose calls cross the run's tool channel to
        `tools.serve` in a host thread; without, the channel is shut before it starts."""
        if self._closed:
            raise SandboxError("this sandbox is closed", hint="make a new Sandbox()")
        self.start()
        worker = self._take()
        with self._lock:
            self._busy.add(worker)
        try:
            return worker.execute(code, self.limits, tools)
        finally:
            self._discard(worker)
            with self._lock:
                self._busy.discard(worker)
                self._idle_again.notify_all()

    def warm(self, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until a walled worker is ready (what a run normally finds); False on timeout."""
        self.start()
        deadline = time.monotonic() + timeout
        while self._idle < 1:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Stop and reap every worker of this sandbox, and every used one still queued."""
        self._closed = True
        self._wanted.set()
        # Programs still running in other threads (a Ctrl-C reaches only the main one):
        # stop them, and let their runs hand the workers to the reaper.
        with self._lock:
            for worker in self._busy:
                worker.kill()
            self._idle_again.wait_for(lambda: not self._busy, timeout=5.0)
        if self._filler is not None:
            self._filler.join(timeout=READY_TIMEOUT)
        self._dispose_ready()
        reaper.drain()
        if self._server is not None:
            self._server.close()
        if self._cgroups is not None:
            self._cgroups.close()

    def _dispose_ready(self) -> None:
        while True:
            try:
                self._ready.get_nowait().dispose()
            except queue.Empty:
                break

    # -- the pool --------------------------------------------------------------------------

    def _take(self) -> RunProcess:
        self._wanted.set()
        while True:
            try:
                worker = self._ready.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._idle -= 1
            # A worker dies with the thread that started it (PR_SET_PDEATHSIG): one started
            # by a thread that has since ended is gone; take the next.
            if worker.alive():
                return worker
            reaper.dispose(worker)
        return self._new()  # cold: none warm

    def _fill(self) -> None:
        while not self._closed:
            while not self._closed and self._idle < self.workers:
                try:
                    worker = self._new()
                except LlamapipeError:
                    time.sleep(0.5)  # runs still work cold and will report the error
                    break
                if self._closed:
                    worker.dispose()
                    break
                with self._lock:
                    self._idle += 1
                self._ready.put(worker)
            self._wanted.wait()
            self._wanted.clear()
        # Before this thread ends: its workers die with it (PR_SET_PDEATHSIG), and killed
        # that way their walled child would be orphaned, not reaped.
        self._dispose_ready()


def check_system() -> None:
    """Refuse early, naming what is missing, where the kernel cannot build the walls."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(
            f"the sandbox needs Linux (namespaces, Landlock, seccomp); this is {sys.platform}",
            hint="run PAL on Linux; or, accepting the risk, LLAMAPIPE_SANDBOX_ISOLATION=unsafe "
            "(no OS walls)",
        )
    from pipelines.sandbox.check import kernel_offers

    missing = [f"{wall} ({detail})" for wall, (_, detail) in kernel_offers().items()]
    if missing:
        raise SandboxUnavailableError(
            "cannot build the sandbox walls: missing " + "; ".join(missing),
            hint=f"enable them in the kernel; {CHECK}; {UNSAFE}",
        )
