"""The memory wall that counts all of a run's memory: a cgroup per run.

`RLIMIT_AS` counts address space, not what a run makes the kernel hold for it: pages of its
scratch tmpfs, kernel buffers. Where this process may make cgroups (root on cgroup v1's
memory and pids controllers, or root on a cgroup v2 hierarchy with both), each walled child
is put in a cgroup of its own before its program arrives, with the memory limit at
`Limits.memory_mb` and the process limit at `Limits.threads` (+1); the run that passes it
is stopped by the kernel's OOM killer, and reported as `killed="memory"`.

Where cgroups are not delegated to this process, there is no such wall: the seccomp allow
list then refuses every call that would allocate memory outside the address-space limit
(SysV and POSIX shared memory, memfd, pipes, AIO, io_uring), and the scratch tmpfs is capped
by its size. `llamapipe sandbox check` says which applies.

Host side only; the cgroup files are not in the program's view.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Layout:
    """Where a run's cgroup goes and what its files are called, per cgroup version."""

    version: int
    parents: tuple[Path, ...]  # one per hierarchy: v1 memory and pids; v2 one
    memory_limit: str  # the file, in the memory hierarchy
    pids_limit: str
    oom_file: str  # where "oom_kill N" is counted


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) → this process's cgroup path."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def find_layout() -> tuple[Layout | None, str]:
    """Where per-run cgroups can be made here, or None and why not."""
    if os.geteuid() != 0:
        return None, "cgroups are not delegated to this user (root only, for now)"
    own = _own_cgroups()
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2 mounted at the root
        controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        if not {"memory", "pids"} <= set(controllers):
            return None, "cgroup v2 without the memory and pids controllers"
        parent = CGROUP_ROOT / "llamapipe"  # a top-level cgroup: no internal-process rule
        return Layout(2, (parent,), "memory.max", "pids.max", "memory.events"), ""
    memory, pids = CGROUP_ROOT / "memory", CGROUP_ROOT / "pids"
    if "memory" in own and "pids" in own and memory.is_dir() and pids.is_dir():
        parents = (memory / own["memory"].lstrip("/"), pids / own["pids"].lstrip("/"))
        if all(os.access(p, os.W_OK) for p in parents):
            return (
                Layout(1, parents, "memory.limit_in_bytes", "pids.max", "memory.oom_control"),
                "",
            )
    return None, "no writable memory and pids cgroup controllers here"


class RunCgroups:
    """Makes, fills and removes the per-run cgroups of one Sandbox."""

    _counter = itertools.count()

    def __init__(self, layout: Layout, memory_bytes: int, processes: int) -> None:
        self.layout = layout
        self.memory_bytes = memory_bytes
        self.processes = processes
        self._leftover: list[list[Path]] = []  # cgroups of runs still exiting
        self._free: list[list[Path]] = []  # empty, limits set: ready for the next run
        self._lock = threading.Lock()
        if layout.version == 2:
            parent = layout.parents[0]
            parent.mkdir(exist_ok=True)
            for where in (CGROUP_ROOT, parent):
                (where / "cgroup.subtree_control").write_text("+memory +pids")
        self._remove_stale()

    def _remove_stale(self) -> None:
        """The cgroups of hosts that died without removing theirs (empty by now)."""
        for parent in self.layout.parents:
            for path in parent.glob("llamapipe-*-*"):
                host = path.name.split("-")[1]
                if host.isdigit() and not Path(f"/proc/{host}").exists():
                    with contextlib.suppress(OSError):
                        path.rmdir()

    @property
    def description(self) -> str:
        return (
            f"cgroup v{self.layout.version} per run: {self.layout.memory_limit} "
            f"{self.memory_bytes >> 20} MiB, {self.layout.pids_limit} {self.processes}"
        )

    def place(self, pid: int) -> RunCgroup:
        """A cgroup of its own for the walled child `pid`, before its program arrives: an
        empty one a finished run left (making one costs as much as moving the child), or a
        new one."""
        self.sweep()
        with self._lock:
            dirs = self._free.pop() if self._free else None
        if dirs is None:
            dirs = self._make()
        try:
            for path in dirs:
                (path / "cgroup.procs").write_text(str(pid))
        except OSError:
            self._discard(dirs)
            raise
        return RunCgroup(self, dirs, self._oom_kills(dirs))

    def _make(self) -> list[Path]:
        name = f"llamapipe-{os.getpid()}-{next(self._counter)}"
        dirs = [parent / name for parent in self.layout.parents]
        made: list[Path] = []
        try:
            for path in dirs:
                path.mkdir()
                made.append(path)
            memory, pids = dirs[0], dirs[-1]
            (memory / self.layout.memory_limit).write_text(str(self.memory_bytes))
            (pids / self.layout.pids_limit).write_text(str(self.processes))
        except OSError:
            self._discard(made)
            raise
        return dirs

    def _oom_kills(self, dirs: list[Path]) -> int:
        """How many times the kernel's OOM killer has acted in this cgroup (a count kept
        across the runs that used it)."""
        try:
            text = (dirs[0] / self.layout.oom_file).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    @staticmethod
    def _empty(dirs: list[Path]) -> bool:
        try:
            return all(not (path / "cgroup.procs").read_text().strip() for path in dirs)
        except OSError:
            return False

    def release(self, dirs: list[Path]) -> None:
        """A run is over: its cgroup is reused once its process has gone."""
        with self._lock:
            (self._free if self._empty(dirs) else self._leftover).append(dirs)

    def sweep(self) -> None:
        """Runs that had not quite ended when they were let go: reuse their cgroups now."""
        with self._lock:
            left, self._leftover = self._leftover, []
            for dirs in left:
                (self._free if self._empty(dirs) else self._leftover).append(dirs)

    def _discard(self, dirs: list[Path]) -> None:
        for path in dirs:
            with contextlib.suppress(OSError):
                path.rmdir()

    def close(self) -> None:
        """At the end, every run has been stopped: wait a moment for the last to exit, then
        remove every cgroup this Sandbox made."""
        for _ in range(50):
            self.sweep()
            if not self._leftover:
                break
            time.sleep(0.01)
        with self._lock:
            every, self._free, self._leftover = [*self._free, *self._leftover], [], []
        for dirs in every:
            self._discard(dirs)


class RunCgroup:
    """One run's cgroup(s)."""

    def __init__(self, owner: RunCgroups, dirs: list[Path], oom_before: int) -> None:
        self.owner = owner
        self.dirs = dirs
        self.oom_before = oom_before

    def oom_killed(self) -> bool:
        """Whether the kernel stopped this run for passing its memory limit."""
        return bool(self.dirs) and self.owner._oom_kills(self.dirs) > self.oom_before

    def remove(self) -> None:
        """The run is over: hand its cgroup back (removed, or reused, once it is empty)."""
        if self.dirs:
            self.owner.release(self.dirs)
        self.dirs = []
