"""A guard process for the red-team tests: the Sandbox runs inside its own pid namespace.

If a hostile program ever got out of the sandbox, it would still be in the guard's pid
namespace: `kill(-1, SIGKILL)` reaches only the guard, never the developer's session.
The guard shares the network and the file system with the tests, so the tests can still
see an escape's side effects (a marker file, a connection to a loopback listener).

Protocol: one JSON request per line on stdin, `{"code", "limits", "python_layers", "tools"}`
(`tools`: serve the run's tool channel with a calculator), or `{"ping": true}`; one JSON
line back, the result plus the guard's pid (and the tool calls the host answered).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000


def enter_pid_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    # root may make a pid namespace directly; anyone else needs a user namespace first.
    flags = CLONE_NEWPID if uid == 0 else CLONE_NEWUSER | CLONE_NEWPID
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare for the guard")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")


def serve() -> None:
    from pipelines.sandbox import Limits, Sandbox

    sandboxes: dict[str, Sandbox] = {}
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("ping"):
            out.write(json.dumps({"pong": True, "guard_pid": os.getpid()}) + "\n")
            out.flush()
            continue
        key = json.dumps([req.get("limits", {}), req.get("python_layers", True)], sort_keys=True)
        if key not in sandboxes:
            sandboxes[key] = Sandbox(
                Limits(**req.get("limits", {})),
                workers=1,
                python_layers=req.get("python_layers", True),
            ).__enter__()
        server = None
        if req.get("tools"):
            from pipelines.agent import Dispatcher, ToolBox, calculator

            server = Dispatcher(ToolBox([calculator]))
        result = sandboxes[key].run(req["code"], tools=server)
        doc = result.model_dump()
        doc["guard_pid"] = os.getpid()
        doc["tool_calls"] = len(server.trace) if server else None
        out.write(json.dumps(doc) + "\n")
        out.flush()
    for sb in sandboxes.values():
        sb.close()


def main() -> None:
    enter_pid_namespace()
    child = os.fork()
    if child:
        # Outside half: nothing to do but wait; stdin/stdout belong to the child.
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    serve()  # pid 1 of the new pid namespace


if __name__ == "__main__":
    main()
