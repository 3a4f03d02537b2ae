"""What of the sandbox works on this machine: each wall's state, seen from inside a real run.

`check_sandbox()` reads what the kernel offers, then runs one probe program through each
engine (the fork server and the per-run worker) with the Python layers off, so the program
can look at its own walls: its uid, what its root holds, whether sockets and processes are
refused, its rlimits. A wall that fails to build is named with the call and errno; the walls
after it are "not tried".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pipelines.sandbox import _uidmap
from pipelines.sandbox.limits import Limits
from pipelines.sandbox.process import SandboxError, SandboxUnavailableError

State = Literal["ok", "missing", "failed", "not tried"]

# In the order a run builds them (see _worker.py and _zygote.py).
WALLS = (
    "private root", "uid", "namespaces", "scratch", "capabilities", "landlock", "rlimits",
    "seccomp", "memory",
)  # fmt: skip

PROBE = """\
import ctypes, errno, os, resource, socket, struct

def refused(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return ""

def capabilities():
    data = ctypes.create_string_buffer(24)
    header = struct.pack("Ii", 0x20080522, 0)
    ctypes.CDLL(None).syscall(CAPGET, header, data)
    return struct.unpack("6I", data.raw)[0] | struct.unpack("6I", data.raw)[3] << 32

def solution():
    return {
        "capabilities": capabilities(),
        "write_device": refused(lambda: open("/dev/zero", "w")),
        "uid": os.getuid(),
        "pid": os.getpid(),
        "root": sorted(os.listdir("/")),
        "proc": os.path.exists("/proc/self"),
        "cwd": os.getcwd(),
        "scratch_writable": refused(lambda: open("/tmp/probe", "w").close()) == "",
        "write_outside": refused(lambda: open("/usr/lib/llamapipe-probe", "w")),
        "socket": refused(lambda: socket.socket()),
        "fork": refused(os.fork),
        "memory": resource.getrlimit(resource.RLIMIT_AS)[0],
        "files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
    }
"""


class WallState(BaseModel):
    wall: str
    state: State
    detail: str = ""


class EngineState(BaseModel):
    engine: str
    ok: bool
    detail: str = ""


class SandboxCheck(BaseModel):
    """What `llamapipe sandbox check --json` prints."""

    ok: bool
    python: str
    caller_uid: int
    kernel: str
    walls: list[WallState]
    engines: list[EngineState]


def kernel_offers() -> dict[str, tuple[State, str]]:
    """The kernel's side of each wall, read without building anything."""
    from pipelines.sandbox import _walls

    found: dict[str, tuple[State, str]] = {}
    userns = _read("/proc/sys/user/max_user_namespaces")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    debian = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if userns == "0":
        found["namespaces"] = ("missing", "user.max_user_namespaces is 0")
    elif os.geteuid() != 0 and debian == "0":
        found["namespaces"] = ("missing", "kernel.unprivileged_userns_clone is 0")
    elif os.geteuid() != 0 and apparmor == "1":
        found["namespaces"] = ("missing", "kernel.apparmor_restrict_unprivileged_userns is 1")
    abi = _walls.landlock_abi()
    if abi < 1:
        found["landlock"] = ("missing", "the kernel offers no Landlock (Linux 5.13+, lsm=landlock)")
    if not _walls.seccomp_available():
        found["seccomp"] = ("missing", "the kernel has no seccomp filter (CONFIG_SECCOMP_FILTER)")
    elif _walls.MACHINE not in ("x86_64", "aarch64"):
        found["seccomp"] = ("missing", f"no system call table for {_walls.MACHINE}")
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


CAPGET = {"x86_64": 125, "aarch64": 90}


def _probe(fork_server: bool) -> tuple[dict | None, BaseException | None, str]:
    """The probe's view from inside, the failure if any, and the engine and memory wall."""
    from pipelines.sandbox import _walls
    from pipelines.sandbox.sandbox import Sandbox

    try:
        with Sandbox(Limits(timeout=10), workers=0, fork_server=fork_server,
                     python_layers=False) as sandbox:  # fmt: skip
            result = sandbox.run(PROBE.replace("CAPGET", str(CAPGET[_walls.MACHINE])))
            engine = sandbox.engine
            if isinstance(result.result, dict):
                result.result["memory_wall"] = sandbox.memory_wall
    except (SandboxUnavailableError, SandboxError) as exc:
        return None, exc, ""
    if not result.ok or not isinstance(result.result, dict):
        message = result.error.message if result.error else "no result"
        return None, SandboxError(f"the probe program failed: {message}"), engine
    return result.result, None, engine


def _states_from_inside(seen: dict, abi: int) -> dict[str, WallState]:
    def allowed(what: str) -> str:
        return seen[what] or "allowed (!)"

    proc = "is visible (!)" if seen["proc"] else "is absent"
    caps = "none" if seen["capabilities"] == 0 else f"{seen['capabilities']:#x} (!)"
    details = {
        "private root": f"/ holds only {', '.join(seen['root'])}; /proc {proc}",
        "uid": _uidmap.describe_program_uid(seen["uid"]),
        "namespaces": f"pid {seen['pid']} of its own pid namespace",
        "scratch": f"writes go to {seen['cwd']}; elsewhere: {allowed('write_outside')}",
        "capabilities": f"effective capabilities: {caps}",
        "landlock": f"ABI {abi}; writing to /dev/zero: {allowed('write_device')}",
        "rlimits": f"memory {seen['memory'] >> 20} MiB, {seen['files']} files, {seen['cpu']} s CPU",
        "seccomp": f"socket(): {allowed('socket')}, fork(): {allowed('fork')}",
        "memory": seen["memory_wall"],
    }
    return {
        wall: WallState(wall=wall, state="failed" if "(!)" in d else "ok", detail=d)
        for wall, d in details.items()
    }


def check_sandbox() -> SandboxCheck:
    """Each wall's state on this machine, and whether each engine runs a program."""
    from pipelines.sandbox import _walls

    offered = kernel_offers()
    engines: list[EngineState] = []
    seen: dict | None = None
    failure: BaseException | None = None
    for fork_server in (True, False):
        name = "fork server" if fork_server else "per-run worker"
        inside, problem, engine = _probe(fork_server)
        if problem is None and fork_server and engine != "fork server":
            problem = SandboxError(engine)  # it fell back to the per-run worker
        engines.append(EngineState(engine=name, ok=problem is None,
                                   detail=str(problem) if problem else ""))  # fmt: skip
        seen = seen or inside
        failure = failure or problem
    walls: list[WallState] = []
    if seen is not None:
        states = _states_from_inside(seen, _walls.landlock_abi())
        walls = [states[w] for w in WALLS]
    else:
        failed = getattr(failure, "wall", "") or ""
        reached = failed in WALLS
        for wall in WALLS:
            if wall in offered:
                state, detail = offered[wall]
                walls.append(WallState(wall=wall, state=state, detail=detail))
            elif wall == failed:
                walls.append(WallState(wall=wall, state="failed", detail=str(failure)))
            elif reached and WALLS.index(wall) > WALLS.index(failed):
                walls.append(WallState(wall=wall, state="not tried"))
            else:
                walls.append(WallState(wall=wall, state="ok" if reached else "not tried"))
    return SandboxCheck(
        ok=all(e.ok for e in engines) and all(w.state == "ok" for w in walls),
        python=sys.executable,
        caller_uid=os.geteuid(),
        kernel=os.uname().release,
        walls=walls,
        engines=engines,
    )
