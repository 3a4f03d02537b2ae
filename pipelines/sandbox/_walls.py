"""The OS walls, built with raw Linux system calls through ctypes.

Standard library only: the sandbox worker loads this file under `python -I -S` before it
locks itself in, so it must not import anything from llamapipe or site-packages.

Each wall raises `WallError(wall, detail)` when the kernel refuses, so the host can say
exactly what this machine is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import struct
from collections.abc import Iterator

try:  # loaded as part of the package (the host's checks), or top-level (the worker)
    from . import _seccomp
except ImportError:
    import _seccomp  # type: ignore[no-redef]

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int
libc.mount.restype = ctypes.c_int
libc.unshare.restype = ctypes.c_int
libc.setns.restype = ctypes.c_int


class WallError(Exception):
    def __init__(self, wall: str, detail: str) -> None:
        super().__init__(f"{wall}: {detail}")
        self.wall = wall
        self.detail = detail


def _fail(wall: str, what: str) -> WallError:
    code = ctypes.get_errno()
    return WallError(wall, f"{what} failed: {os.strerror(code)} (errno {code})")


@contextlib.contextmanager
def step(wall: str, what: str) -> Iterator[None]:
    """Name the wall and the call when a step fails for an OS reason: the user is told
    which wall, which call, which errno or limit."""
    try:
        yield
    except WallError:
        raise
    except OSError as exc:
        detail = f"{what} failed: {exc.strerror or exc} (errno {exc.errno})"
        if exc.filename:
            detail += f" on {exc.filename}"
        if exc.errno == errno.EMFILE:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            detail += f"; RLIMIT_NOFILE is {soft} (hard {hard})"
        raise WallError(wall, detail) from exc
    except (ValueError, OverflowError) as exc:  # how resource.setrlimit refuses a value
        raise WallError(wall, f"{what} failed: {exc}") from exc


# -- namespaces ------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACES = (
    CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
    | CLONE_NEWNS
    | CLONE_NEWIPC
    | CLONE_NEWUTS
    | CLONE_NEWCGROUP
)
# The fork server builds the namespaces in two steps: once for all runs, a user namespace
# (which gives the rights to make the others) and those whose use the seccomp filter already
# forbids (network: no sockets; UTS: no sethostname; cgroup); then per run, a pid namespace
# for its fork, and user, mount and IPC namespaces of its own (SysV shared memory is not
# filtered, so siblings must not share IPC; RLIMIT_NPROC counts a uid's processes per user
# namespace, so a run's thread cap must not count its siblings).
SHARED_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWCGROUP
RUN_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC
UNPRIVILEGED_UID = 65534  # "nobody": what a root caller drops to before anything else


def drop_root() -> None:
    """Started as root: become `nobody` for good before building anything."""
    if os.geteuid() == 0:
        become(UNPRIVILEGED_UID, f"becoming uid {UNPRIVILEGED_UID}")


def become(uid: int, what: str) -> None:
    """uid and gid `uid` for good, with no supplementary groups (and so no capabilities)."""
    with step("uid", what):
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if os.geteuid() != uid or os.getuid() != uid:
        raise WallError("uid", f"{what}: the uid did not change")
    # Changing uid made the process undumpable, which makes /proc/self/uid_map root's.
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def enter_namespaces(flags: int, proc: int) -> None:
    """New namespaces of `flags` for this process (`proc`: a descriptor of the host's /proc,
    since the private root has none; the id maps of a new user namespace are written there).

    Inside, the process keeps its own (unprivileged) uid and gid; after CLONE_NEWPID the
    next fork is pid 1 of a pid namespace that holds nothing else, and a new network
    namespace has only a loopback interface that is down.
    """
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(flags) != 0:
        code = ctypes.get_errno()
        hint = ""
        if code in (errno.EPERM, errno.ENOSPC, errno.EACCES) and flags & CLONE_NEWUSER:
            hint = (
                " (unprivileged user namespaces are disabled: see sysctl "
                "user.max_user_namespaces, kernel.unprivileged_userns_clone or "
                "kernel.apparmor_restrict_unprivileged_userns)"
            )
        raise WallError(
            "namespaces",
            f"unshare({_flag_names(flags)}) failed: {os.strerror(code)} (errno {code}){hint}",
        )
    if flags & CLONE_NEWUSER:
        write_id_maps(proc, uid, gid)


def write_id_maps(proc: int, uid: int, gid: int) -> None:
    """Map `uid` and `gid` to themselves in the user namespace just made (through `proc`)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        try:
            fd = os.open(f"self/{name}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise WallError("namespaces", f"writing /proc/self/{name} failed: {exc}") from exc


_FLAG_NAMES = {
    CLONE_NEWUSER: "USER", CLONE_NEWPID: "PID", CLONE_NEWNET: "NET", CLONE_NEWNS: "NS",
    CLONE_NEWIPC: "IPC", CLONE_NEWUTS: "UTS", CLONE_NEWCGROUP: "CGROUP",
}  # fmt: skip


def _flag_names(flags: int) -> str:
    return "|".join(f"CLONE_NEW{n}" for bit, n in _FLAG_NAMES.items() if flags & bit)


def pid_namespace_for_next_fork() -> None:
    """The next fork becomes pid 1 of a new, empty pid namespace (this process stays put)."""
    if libc.unshare(CLONE_NEWPID) != 0:
        raise _fail("namespaces", "unshare(CLONE_NEWPID)")


def back_to_own_pid_namespace(own: int) -> None:
    """Undo `pid_namespace_for_next_fork` (`own`: an fd of /proc/self/ns/pid), so that it
    can be done again for the next run."""
    if libc.setns(own, CLONE_NEWPID) != 0:
        raise _fail("namespaces", "setns(CLONE_NEWPID)")


MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 0x40000


def mount_scratch(path: str, size_bytes: int) -> None:
    """A fresh, size-capped tmpfs over `path`, seen by nobody outside this mount namespace."""
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise _fail("scratch", "making / private")
    opts = f"size={size_bytes},mode=0700,nr_inodes=4096".encode()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, opts) != 0:
        raise _fail("scratch", f"mounting a tmpfs on {path}")


# -- privileges ------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # unknown: try them all (dropping one past the last fails harmlessly)


LAST_CAP = _last_capability()  # read once, before any wall hides /proc


def die_with_parent(sig: int) -> None:
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def drop_capabilities() -> None:
    """No capabilities in any set (the user namespace granted a full set), no new privileges."""
    for cap in range(LAST_CAP + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two empty {effective, permitted, inheritable}
    if libc.syscall(_nr("capset"), header, data) != 0:
        raise _fail("capabilities", "capset")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS)")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


# -- Landlock ---------------------------------------------------------------------------

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 16, 32, 64, 128
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 256, 512, 1024, 2048
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 4096, 8192, 16384, 32768
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
RULE_PATH_BENEATH = 1
LANDLOCK_CREATE_RULESET_VERSION = 1


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers; 0 when it has none."""
    abi = libc.syscall(_nr("landlock_create_ruleset"), None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return max(abi, 0)


def _fs_rights(abi: int) -> int:
    rights = (FS_MAKE_SYM << 1) - 1  # ABI 1: bits 0..12
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


READ = FS_READ_FILE | FS_READ_DIR


class LandlockRules:
    """The read rules of `landlock`, prepared once (paths opened, rights worked out) so that
    each run of a fork server only makes a ruleset from them, adds its own writable paths
    (its scratch tmpfs exists only in its own mount namespace) and enters it."""

    def __init__(self, readable: list[str]) -> None:
        self.abi = landlock_abi()
        if self.abi < 1:
            raise WallError(
                "landlock", "the kernel offers no Landlock (needs Linux 5.13+, lsm=landlock)"
            )
        self.fs = _fs_rights(self.abi)
        net = NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0
        if self.abi >= 6:
            self.attr = struct.pack("QQQ", self.fs, net, scoped)
        elif self.abi >= 4:
            self.attr = struct.pack("QQ", self.fs, net)
        else:
            self.attr = struct.pack("Q", self.fs)
        self.write = self.fs & ~(
            FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_MAKE_SOCK | FS_MAKE_FIFO
        )
        self.fds: list[int] = []
        with step("landlock", "opening the readable paths for their rules"):
            self.rules = [rule for path in readable if (rule := self._rule(path, READ))]

    def _rule(self, path: str, rights: int) -> bytes | None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, PermissionError):
            return None  # absent, or unreachable for this uid anyway: nothing to grant
        self.fds.append(fd)
        if not os.path.isdir(path):
            rights &= FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_EXECUTE
        return struct.pack("=Qi", rights, fd)  # packed struct landlock_path_beneath_attr

    def restrict(self, writable: list[str]) -> None:
        """Enter a Landlock domain: the read rules, plus read and write beneath `writable`."""
        ruleset = libc.syscall(_nr("landlock_create_ruleset"), self.attr, len(self.attr), 0)
        if ruleset < 0:
            raise _fail("landlock", "landlock_create_ruleset")
        add = _nr("landlock_add_rule")
        try:
            with step("landlock", "opening the writable paths for their rules"):
                own = [rule for path in writable if (rule := self._rule(path, self.write))]
            for rule in (*self.rules, *own):
                if libc.syscall(add, ruleset, RULE_PATH_BENEATH, rule, 0) != 0:
                    raise _fail("landlock", "landlock_add_rule")
            if libc.syscall(_nr("landlock_restrict_self"), ruleset, 0) != 0:
                raise _fail("landlock", "landlock_restrict_self")
        finally:
            os.close(ruleset)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


# -- seccomp (the allow list lives in _seccomp) --------------------------------------------

MACHINE = _seccomp.MACHINE
seccomp_available = _seccomp.seccomp_available


def _nr(name: str) -> int:
    try:
        return _seccomp.nr(name)
    except _seccomp.SeccompError as exc:
        raise WallError("seccomp", str(exc)) from None


def seccomp_filter() -> bytes:
    try:
        return _seccomp.seccomp_filter()
    except _seccomp.SeccompError as exc:
        raise WallError("seccomp", str(exc)) from None


def install_seccomp(blob: bytes) -> None:
    try:
        _seccomp.install_seccomp(blob)
    except _seccomp.SeccompError as exc:
        raise WallError("seccomp", str(exc)) from None
