"""The host side: a pool of pre-walled worker processes, one per program.

A run takes a worker that is already walled in and waiting (warm), sends it the program,
and hands the used worker to the reaper whatever happened (pipelines/sandbox/process.py
holds the worker process itself). A background thread keeps `workers` replacements
ready, so a run costs only the program and a few pipe round-trips. Nothing survives a run:
each worker runs exactly one program.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path

from pipelines.errors import LlamapipeError
from pipelines.sandbox.limits import Limits
from pipelines.sandbox.process import (
    READY_TIMEOUT,
    Isolation,
    SandboxError,
    SandboxUnavailableError,
    Worker,
    reaper,
)
from pipelines.sandbox.result import SandboxResult

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
    ) -> None:
        if isolation not in ("linux", "unsafe"):
            raise ValueError(f"isolation must be 'linux' or 'unsafe', not {isolation!r}")
        self.limits = limits or Limits()
        self.workers = max(0, workers)
        self.isolation: Isolation = isolation
        self.python_layers = python_layers
        self._ready: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._started = False
        self._filler: threading.Thread | None = None
        self._busy: set[Worker] = set()  # running a program now, in any thread
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
            first = Worker(self.limits, self.isolation, self.python_layers)
            first.wait_ready()
            self._started = True
            self._idle += 1
            self._ready.put(first)
            if self.workers:
                self._filler = threading.Thread(
                    target=self._fill, name="llamapipe-sandbox-pool", daemon=True
                )
                self._filler.start()

    def run(self, code: str) -> SandboxResult:
        """Run one program; never raises for anything the program does."""
        if self._closed:
            raise SandboxError("this sandbox is closed", hint="make a new Sandbox()")
        self.start()
        worker = self._take()
        with self._lock:
            self._busy.add(worker)
        try:
            return worker.execute(code, self.limits)
        finally:
            reaper.dispose(worker)
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

    def _dispose_ready(self) -> None:
        while True:
            try:
                self._ready.get_nowait().dispose()
            except queue.Empty:
                break

    # -- the pool --------------------------------------------------------------------------

    def _take(self) -> Worker:
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
            if worker.proc.poll() is None:
                return worker
            reaper.dispose(worker)
        worker = Worker(self.limits, self.isolation, self.python_layers)  # cold: none warm
        worker.wait_ready()
        return worker

    def _fill(self) -> None:
        while not self._closed:
            while not self._closed and self._idle < self.workers:
                worker = Worker(self.limits, self.isolation, self.python_layers)
                try:
                    worker.wait_ready()
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
    """Refuse early, naming what is missing, where the walls cannot be built."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(
            f"the sandbox needs Linux (namespaces, Landlock, seccomp); this is {sys.platform}",
            hint="run PAL on Linux, or accept the risk with --isolation unsafe",
        )
    from pipelines.sandbox import _walls

    missing = []
    if not _walls.seccomp_available():
        missing.append("seccomp (kernel without CONFIG_SECCOMP_FILTER)")
    if _walls.landlock_abi() < 1:
        missing.append("Landlock (Linux 5.13+ booted with lsm=...,landlock)")
    if _walls.MACHINE not in ("x86_64", "aarch64"):
        missing.append(f"a seccomp table for {_walls.MACHINE}")
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            missing.append("user namespaces (user.max_user_namespaces is 0)")
    except (OSError, ValueError):
        pass
    if missing:
        raise SandboxUnavailableError(
            "cannot build the sandbox walls: missing " + "; ".join(missing),
            hint="enable them in the kernel, or accept the risk with --isolation unsafe",
        )
