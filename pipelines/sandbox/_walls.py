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
import platform
import resource
import struct
from collections.abc import Iterator

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
    if os.geteuid() != 0:
        return
    with step("uid", f"becoming uid {UNPRIVILEGED_UID}"):
        os.setgroups([])
        os.setresgid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        os.setresuid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise WallError("uid", "could not drop root")
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
    if not flags & CLONE_NEWUSER:
        return
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


def landlock(readable: list[str], writable: list[str]) -> int:
    """Confine this process: read only `readable`, read and write only `writable`.

    Also (by ABI) no TCP bind/connect at all and no signals or abstract unix sockets
    outside the sandbox. Returns the ABI used.
    """
    rules = LandlockRules(readable)
    try:
        rules.restrict(writable)
    finally:
        rules.close()
    return rules.abi


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


# -- seccomp ----------------------------------------------------------------------------

_SYSCALLS = {
    "x86_64": {
        "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50,
        "socketpair": 53, "accept4": 288, "clone": 56, "fork": 57, "vfork": 58,
        "execve": 59, "execveat": 322, "clone3": 435, "ptrace": 101, "mount": 165,
        "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
        "setsid": 112, "setpgid": 109, "setrlimit": 160, "prlimit64": 302, "keyctl": 250,
        "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "process_vm_readv": 310, "process_vm_writev": 311,
        "personality": 135, "memfd_create": 319, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "mknod": 133, "mknodat": 259, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "ioctl": 16, "capset": 126, "landlock_create_ruleset": 444,
        "landlock_add_rule": 445, "landlock_restrict_self": 446, "kill": 62, "tkill": 200,
        "tgkill": 234, "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114,
        "setresuid": 117, "setresgid": 119, "setgroups": 116, "sethostname": 170,
        "ioperm": 173, "iopl": 172, "swapon": 167, "swapoff": 168, "reboot": 169,
        "kexec_load": 246, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "acct": 163, "quotactl": 179, "syslog": 103, "uselib": 134, "lookup_dcookie": 212,
        "vhangup": 153, "modify_ldt": 154, "fanotify_init": 300,
    },
    "aarch64": {
        "socket": 198, "connect": 203, "accept": 202, "bind": 200, "listen": 201,
        "socketpair": 199, "accept4": 242, "clone": 220, "execve": 221, "execveat": 281,
        "clone3": 435, "ptrace": 117, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "unshare": 97, "setns": 268, "setsid": 157, "setpgid": 154,
        "setrlimit": 164, "prlimit64": 261, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "process_vm_readv": 270, "process_vm_writev": 271, "personality": 92,
        "memfd_create": 279, "open_by_handle_at": 265, "name_to_handle_at": 264,
        "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424, "mknodat": 33,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ioctl": 29, "capset": 91,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "kill": 129, "tkill": 130, "tgkill": 131,
        "setuid": 146, "setgid": 144, "setreuid": 145, "setregid": 143, "setresuid": 147,
        "setresgid": 149, "setgroups": 159, "sethostname": 161, "swapon": 224,
        "swapoff": 225, "reboot": 142, "kexec_load": 104, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "acct": 89, "quotactl": 60,
        "syslog": 116, "vhangup": 58, "fanotify_init": 262,
    },
}  # fmt: skip
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
MACHINE = platform.machine()


def _nr(name: str) -> int:
    try:
        return _SYSCALLS[MACHINE][name]
    except KeyError:
        raise WallError("seccomp", f"no system call table for {MACHINE}") from None


# Denied outright (EPERM): networking, new programs and processes, namespaces and mounts,
# privilege changes, kernel attack surface, other processes' memory.
DENIED = [
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "listen",
    "fork", "vfork", "execve", "execveat", "ptrace", "mount", "umount2", "pivot_root",
    "chroot", "unshare", "setns", "setsid", "setpgid", "setrlimit", "keyctl", "add_key",
    "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "process_vm_readv", "process_vm_writev",
    "personality", "memfd_create", "open_by_handle_at", "name_to_handle_at", "pidfd_open",
    "pidfd_getfd", "pidfd_send_signal", "mknod", "mknodat", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "capset", "setuid",
    "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "sethostname",
    "ioperm", "iopl", "swapon", "swapoff", "reboot", "kexec_load", "init_module",
    "finit_module", "delete_module", "acct", "quotactl", "syslog", "uselib",
    "lookup_dcookie", "vhangup", "modify_ldt", "fanotify_init", "landlock_create_ruleset",
]  # fmt: skip

CLONE_THREAD = 0x00010000
TIOCSTI = 0x5412
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
X32_SYSCALL_BIT = 0x40000000


def _errno(code: int) -> int:
    return 0x00050000 | code


def _stmt(code: int, k: int) -> bytes:
    return struct.pack("HBBI", code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


LD_W_ABS, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG1, OFF_ARG2 = 0, 4, 16, 24, 32


def seccomp_program() -> list[bytes]:
    """The BPF filter: wrong arch → kill; denied calls → EPERM; clone only for threads;
    clone3 → ENOSYS (so libc falls back to clone, whose flags we can see); prlimit64 only
    to read; ioctl TIOCSTI → EPERM; the rest allowed."""
    table = _SYSCALLS.get(MACHINE)
    if table is None:
        raise WallError("seccomp", f"no system call table for {MACHINE}")
    prog = [
        _stmt(LD_W_ABS, OFF_ARCH),
        _jump(JEQ, _AUDIT_ARCH[MACHINE], 1, 0),
        _stmt(RET, RET_KILL_PROCESS),
        _stmt(LD_W_ABS, OFF_NR),
    ]
    if MACHINE == "x86_64":
        prog += [_jump(JGE, X32_SYSCALL_BIT, 0, 1), _stmt(RET, _errno(errno.EPERM))]
    for name in DENIED:
        if name in table:
            prog += [_jump(JEQ, table[name], 0, 1), _stmt(RET, _errno(errno.EPERM))]
    prog += [_jump(JEQ, table["clone3"], 0, 1), _stmt(RET, _errno(errno.ENOSYS))]
    # clone(flags, ...): allowed only when it makes a thread.
    prog += [
        _jump(JEQ, table["clone"], 0, 4),
        _stmt(LD_W_ABS, OFF_ARG0),
        _jump(JSET, CLONE_THREAD, 1, 0),
        _stmt(RET, _errno(errno.EPERM)),
        _stmt(RET, RET_ALLOW),
    ]
    # prlimit64(pid, resource, new_limit, old_limit): reading is fine, setting is not.
    prog += [
        _stmt(LD_W_ABS, OFF_NR),
        _jump(JEQ, table["prlimit64"], 0, 6),
        _stmt(LD_W_ABS, OFF_ARG2),
        _jump(JEQ, 0, 0, 2),
        _stmt(LD_W_ABS, OFF_ARG2 + 4),
        _jump(JEQ, 0, 1, 0),
        _stmt(RET, _errno(errno.EPERM)),
        _stmt(RET, RET_ALLOW),
    ]
    # ioctl(fd, TIOCSTI, ...): pushing keystrokes into a terminal.
    prog += [
        _stmt(LD_W_ABS, OFF_NR),
        _jump(JEQ, table["ioctl"], 0, 3),
        _stmt(LD_W_ABS, OFF_ARG1),  # the kernel reads the command as 32 bits too
        _jump(JEQ, TIOCSTI, 0, 1),
        _stmt(RET, _errno(errno.EPERM)),
        _stmt(RET, RET_ALLOW),
    ]
    return prog


SECCOMP_MODE_FILTER = 2
PR_SET_SECCOMP = 22


def seccomp() -> int:
    """Install the filter (needs no_new_privs). Returns its length in instructions."""
    blob = seccomp_filter()
    install_seccomp(blob)
    return len(blob) // 8


def seccomp_filter() -> bytes:
    """The filter as the kernel reads it: built once, installed by each run."""
    return b"".join(seccomp_program())


def install_seccomp(blob: bytes) -> None:
    buffer = ctypes.create_string_buffer(blob, len(blob))
    fprog = struct.pack("HxxxxxxP", len(blob) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise _fail("seccomp", "prctl(PR_SET_SECCOMP)")


def seccomp_available() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False
