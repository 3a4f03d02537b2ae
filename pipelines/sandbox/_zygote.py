"""The sandbox's fork server (zygote): prepares once what every run needs, then forks one
walled child per program.

Started by the host as `python -I -S -X utf8 _zygote.py CONFIG_JSON`, standard library only,
with a SOCK_SEQPACKET control socket. Once, it drops root, enters the namespaces runs may
share (a user namespace, which gives the rights to make the others, and network, UTS and
cgroup namespaces, whose use the seccomp filter forbids anyway) and a pid namespace, forks
the zygote proper as its pid 1 (this first process stays outside and only waits for it),
imports the allowed modules, and builds the Landlock ruleset and the seccomp filter. The
zygote never runs a program itself.

Per run, the host sends b"F" with six fds (the child's stdin, stdout, stderr, result pipe
and the two ends of its tool channel); the zygote forks the child as pid 1 of a new pid
namespace and answers b"S" with a pidfd of it (race-free: the zygote has not reaped it
yet). The child makes its own mount and IPC namespaces, a scratch tmpfs, rlimits, drops
every capability, enters the Landlock domain and the seccomp filter, empties its
environment, and only then reads the program
(_worker.enter_run_walls and _worker.serve). The zygote reaps each child and sends b"X" with
its pid and wait status.

When the control socket closes (the host closed the sandbox, exited or died), the zygote
kills and reaps every child and exits; it also dies with the host thread that started it
(PR_SET_PDEATHSIG), and its children die with it. Setup failures: b"E" + {"wall", "detail"}.

Before all that, as the caller, it moves into a private root that holds only the Python
runtime, read-only (_root.py); the children inherit it. The host's /proc is not in it: the
zygote keeps one descriptor of it, through which each child writes its user namespace's id
maps before closing it. Landlock rules name files by open descriptors: the zygote opens the
private root once and each child makes its own ruleset from it plus its scratch tmpfs (which
exists only in the child's mount namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys

CHILD_FDS = 6  # stdin, stdout, stderr, result, tool requests (write), tool replies (read)
MAX_FD = 1 << 20  # above any descriptor the zygote holds (RLIMIT_NOFILE's usual hard cap)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    control = socket.socket(fileno=cfg["control_fd"])
    sys.path[:0] = cfg["sys_path"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _root
    import _walls
    import _worker

    sys.path.pop(0)
    try:
        # First, with the caller's rights (a root caller's Python may live where `nobody`
        # cannot read); ONE_THREAD in the environment keeps BLAS from starting threads,
        # which would make the process unable to enter a user namespace.
        for name in cfg["preload"]:
            with contextlib.suppress(ImportError):
                __import__(name)
        proc = _root.enter_private_root(cfg["readable"], cfg["hidden"])
        _walls.drop_root()
        # After the credential change above, which would clear it.
        _walls.die_with_parent(signal.SIGKILL)
        _walls.enter_namespaces(_walls.SHARED_NAMESPACES | _walls.CLONE_NEWPID, proc)
        with _walls.step("namespaces", "fork into the new pid namespace"):
            zygote = os.fork()
        if zygote:
            # The outside half: waits for the zygote and passes on how it ended, so the host
            # reaps this process and nothing is orphaned (as a worker's outside half does).
            _worker.supervise(zygote)
        # The zygote is pid 1 of a pid namespace its user namespace owns: it may make a new
        # one for each run's fork and come back (setns), and when it dies, the kernel kills
        # every run still inside.
        _walls.die_with_parent(signal.SIGKILL)
        with _walls.step("namespaces", "opening /proc/self/ns/pid"):
            own_pid_ns = os.open("self/ns/pid", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        _worker.prepare_python_layers(cfg)
        rules = _walls.LandlockRules(["/"])  # the private root: nothing but the runtime
        seccomp_filter = _walls.seccomp_filter()
    except _walls.WallError as exc:
        control.send(b"E" + json.dumps({"wall": exc.wall, "detail": exc.detail}).encode())
        os._exit(3)
    control.send(b"R")
    layers = (_walls, _root, _worker)
    Zygote(control, cfg, proc, own_pid_ns, rules, seccomp_filter, layers).serve()


class Zygote:
    def __init__(
        self,
        control: socket.socket,
        cfg: dict,
        proc: int,
        own_pid_ns: int,
        rules: object,
        seccomp_filter: bytes,
        layers: tuple[object, object, object],
    ) -> None:
        self.control = control
        self.cfg = cfg
        self.proc = proc  # the host's /proc: where each run writes its user namespace's maps
        self.own_pid_ns = own_pid_ns
        self.rules = rules
        self.seccomp_filter = seccomp_filter
        self.walls, self.root, self.worker = layers  # _walls, _root and _worker
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so wakeups are written
        signal.set_wakeup_fd(self.wake_w)
        with selectors.DefaultSelector() as sel:
            sel.register(self.control, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fd == self.wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self.wake_r, 512)
                        self.reap()
                    elif not self.request():
                        self.shutdown()

    def request(self) -> bool:
        """Serve one message from the host; False when the host has gone."""
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 64, CHILD_FDS)
        except OSError:
            return False
        if not message:
            return False
        if message == b"F" and len(fds) == CHILD_FDS:
            try:
                self.fork(fds)
            finally:
                for fd in fds:
                    os.close(fd)
        else:
            for fd in fds:
                os.close(fd)
        return True

    def fork(self, fds: list[int]) -> None:
        walls = self.walls
        try:
            walls.pid_namespace_for_next_fork()  # type: ignore[attr-defined]
            pid = os.fork()
        except (OSError, walls.WallError) as exc:  # type: ignore[attr-defined]
            self.control.send(b"E" + json.dumps({"wall": "fork", "detail": str(exc)}).encode())
            return
        if pid == 0:
            self.child(fds)  # never returns
        walls.back_to_own_pid_namespace(self.own_pid_ns)  # type: ignore[attr-defined]
        self.children.add(pid)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(self.control, [b"S" + b"%d" % pid], [pidfd])
        finally:
            os.close(pidfd)

    def child(self, fds: list[int]) -> None:
        """In the forked child: pid 1 of its own pid namespace. Keep only its six fds and
        the ruleset, wall itself in, and serve its one program."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            stdin, stdout, stderr, result, tool_w, tool_r = fds
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                os.dup2(fd, target)
            cfg = dict(self.cfg)
            cfg["result_fd"] = os.dup(result)
            cfg["tool_fds"] = [os.dup(tool_w), os.dup(tool_r)]
            ours = {0, 1, 2, cfg["result_fd"], *cfg["tool_fds"], self.proc}
            keep = sorted(ours | set(self.rules.fds))  # type: ignore[attr-defined]
            for low, high in zip(keep, [*keep[1:], MAX_FD], strict=True):
                os.closerange(low + 1, high)  # one close_range(2) per gap
            self.worker.enter_run_walls(  # type: ignore[attr-defined]
                self.walls, self.root, cfg, self.proc, self.rules, self.seccomp_filter
            )
        except BaseException as exc:
            detail = {
                "wall": getattr(exc, "wall", "setup"),
                "detail": str(getattr(exc, "detail", exc))[:500],
            }
            with contextlib.suppress(BaseException):
                self.worker._send(b"E" + json.dumps(detail).encode())  # type: ignore[attr-defined]
            os._exit(3)
        try:
            self.worker.serve(cfg)  # type: ignore[attr-defined]
        finally:
            os._exit(70)  # serve exits by itself; this only guards against a return

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            with contextlib.suppress(OSError):
                self.control.send(b"X" + json.dumps([pid, status]).encode())

    def shutdown(self) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)


if __name__ == "__main__":
    main()
