"""The seccomp wall: an allow list. Every system call not named here fails with EPERM.

Standard library only, like `_walls` (loaded by the worker and the zygote before they wall
themselves in). The list is what a Python program needs once the interpreter is running and
its allowed modules are imported: files (Landlock and the read-only private root decide
which), memory, threads, signals to itself, time, and reading its own ids and limits.

Left out on purpose, so they fail: sockets and every other way to talk to the world; new
processes and exec; mounts, namespaces and privilege changes; file metadata (chmod, chown,
utimes, xattrs, inode flags); inotify and fanotify; timers and timerfd; SysV and POSIX IPC,
memfd and pipes (memory the address-space limit does not count); AIO and io_uring; flock and
fcntl locks; kill and its kin; the mount-inspection calls; fadvise and preadv2/pwritev2
(whose RWF_NOWAIT tells, and fadvise sets, whether a shared file's pages are cached: a
channel between runs); sysinfo (the host's task count and memory); anything newer.

Four calls are allowed only with some arguments: clone only for a thread (clone3 answers
ENOSYS so libc falls back to clone, whose flags the filter can see), prlimit64 only to read,
ioctl only for a terminal's attributes and close-on-exec, fcntl only for descriptor flags.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.restype = ctypes.c_int

# System call numbers: the calls allowed, those allowed with some arguments, and those the
# walls themselves make (Landlock, capset, the private root's mount calls).
SYSCALLS = {
    "x86_64": {
        "read": 0, "write": 1, "readv": 19, "writev": 20, "pread64": 17, "pwrite64": 18,
        "preadv": 295, "pwritev": 296, "lseek": 8,
        "openat": 257, "open": 2, "close": 3, "close_range": 436, "fstat": 5,
        "newfstatat": 262, "stat": 4, "lstat": 6, "statx": 332, "getdents64": 217,
        "getdents": 78, "readlink": 89, "readlinkat": 267, "access": 21, "faccessat": 269,
        "faccessat2": 439, "getcwd": 79, "chdir": 80, "fchdir": 81, "mkdir": 83,
        "mkdirat": 258, "rmdir": 84, "unlink": 87, "unlinkat": 263, "rename": 82,
        "renameat": 264, "renameat2": 316, "symlink": 88, "symlinkat": 266, "truncate": 76,
        "ftruncate": 77, "fsync": 74, "fdatasync": 75, "fallocate": 285,
        "dup": 32, "dup2": 33, "dup3": 292, "mmap": 9, "munmap": 11, "mprotect": 10,
        "mremap": 25, "brk": 12, "madvise": 28, "msync": 26, "rt_sigaction": 13,
        "rt_sigprocmask": 14, "rt_sigreturn": 15, "sigaltstack": 131, "rt_sigsuspend": 130,
        "pause": 34, "futex": 202, "set_robust_list": 273, "set_tid_address": 218, "rseq": 334,
        "exit": 60, "exit_group": 231, "gettid": 186, "sched_yield": 24,
        "sched_getaffinity": 204, "arch_prctl": 158, "clock_gettime": 228, "clock_getres": 229,
        "clock_nanosleep": 230, "nanosleep": 35, "gettimeofday": 96, "time": 201, "times": 100,
        "getpid": 39, "getppid": 110, "getuid": 102, "geteuid": 107, "getgid": 104,
        "getegid": 108, "getgroups": 115, "getresuid": 118, "getresgid": 120, "getpgrp": 111,
        "getpgid": 121, "getsid": 124, "uname": 63, "getrusage": 98,
        "getcpu": 309, "getrandom": 318, "umask": 95, "select": 23, "pselect6": 270, "poll": 7,
        "ppoll": 271, "restart_syscall": 219, "getrlimit": 97, "clone": 56, "clone3": 435,
        "prlimit64": 302, "ioctl": 16, "fcntl": 72, "capset": 126,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "pivot_root": 155, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442,
    },
    "aarch64": {
        "read": 63, "write": 64, "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68,
        "preadv": 69, "pwritev": 70, "lseek": 62,
        "openat": 56, "close": 57, "close_range": 436, "fstat": 80, "newfstatat": 79,
        "statx": 291, "getdents64": 61, "readlinkat": 78, "faccessat": 48, "faccessat2": 439,
        "getcwd": 17, "chdir": 49, "fchdir": 50, "mkdirat": 34, "unlinkat": 35, "renameat": 38,
        "renameat2": 276, "symlinkat": 36, "truncate": 45, "ftruncate": 46, "fsync": 82,
        "fdatasync": 83, "fallocate": 47, "dup": 23, "dup3": 24, "mmap": 222,
        "munmap": 215, "mprotect": 226, "mremap": 216, "brk": 214, "madvise": 233,
        "msync": 227, "rt_sigaction": 134, "rt_sigprocmask": 135, "rt_sigreturn": 139,
        "sigaltstack": 132, "rt_sigsuspend": 133, "futex": 98, "set_robust_list": 99,
        "set_tid_address": 96, "rseq": 293, "exit": 93, "exit_group": 94, "gettid": 178,
        "sched_yield": 124, "sched_getaffinity": 123, "clock_gettime": 113,
        "clock_getres": 114, "clock_nanosleep": 115, "nanosleep": 101, "gettimeofday": 169,
        "times": 153, "getpid": 172, "getppid": 173, "getuid": 174, "geteuid": 175,
        "getgid": 176, "getegid": 177, "getgroups": 158, "getresuid": 148, "getresgid": 150,
        "getpgid": 155, "getsid": 156, "uname": 160, "getrusage": 165,
        "getcpu": 168, "getrandom": 278, "umask": 166, "pselect6": 72, "ppoll": 73,
        "restart_syscall": 128, "getrlimit": 163, "clone": 220, "clone3": 435,
        "prlimit64": 261, "ioctl": 29, "fcntl": 25, "capset": 91,
        "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "pivot_root": 41, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442,
    },
}  # fmt: skip
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
MACHINE = platform.machine()

ALLOWED = (
    # files and descriptors (which files: the private root, Landlock and the scratch tmpfs)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek",
    "openat", "open", "close", "close_range", "fstat",
    "newfstatat", "stat", "lstat", "statx", "getdents64", "getdents", "readlink",
    "readlinkat", "access", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "mkdir",
    "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "symlink",
    "symlinkat", "truncate", "ftruncate", "fsync", "fdatasync", "fallocate", "dup", "dup2",
    "dup3", "umask",
    # memory (counted by RLIMIT_AS)
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "msync",
    # signals, to itself only
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigsuspend", "pause",
    # threads (RLIMIT_NPROC caps them) and exiting
    "futex", "set_robust_list", "set_tid_address", "rseq", "exit", "exit_group", "gettid",
    "sched_yield", "sched_getaffinity", "arch_prctl", "restart_syscall",
    # time and waiting
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "times", "select", "pselect6", "poll", "ppoll",
    # what it may know of itself
    "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "getpgrp", "getpgid", "getsid", "uname", "getrusage", "getcpu", "getrandom",
    "getrlimit",
)  # fmt: skip

CLONE_THREAD = 0x00010000
# ioctl: TCGETS (isatty), FIONCLEX, FIOCLEX; fcntl: F_DUPFD, F_GETFD, F_SETFD, F_GETFL,
# F_SETFL, F_DUPFD_CLOEXEC (no locks, no leases, no owners or signals, no pipe sizes).
IOCTLS = (0x5401, 0x5450, 0x5451)
FCNTLS = (0, 1, 2, 3, 4, 1030)


class SeccompError(Exception):
    pass


def nr(name: str) -> int:
    try:
        return SYSCALLS[MACHINE][name]
    except KeyError:
        raise SeccompError(f"no system call number for {name} on {MACHINE}") from None


RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
X32_SYSCALL_BIT = 0x40000000
LD_W_ABS, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG1, OFF_ARG2 = 0, 4, 16, 24, 32


def _errno(code: int) -> int:
    return 0x00050000 | code


def _stmt(code: int, k: int) -> bytes:
    return struct.pack("HBBI", code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


DENY = _stmt(RET, _errno(errno.EPERM))
ALLOW = _stmt(RET, RET_ALLOW)


def _one_of(arg_offset: int, values: tuple[int, ...]) -> list[bytes]:
    """Allow when the 32-bit argument at `arg_offset` is one of `values`, else deny (the
    kernel reads ioctl's and fcntl's command as an unsigned int, so 32 bits are all)."""
    prog = [_stmt(LD_W_ABS, arg_offset)]
    for i, value in enumerate(values):
        prog.append(_jump(JEQ, value, len(values) - i, 0))
    return [*prog, DENY, ALLOW]


def program() -> list[bytes]:
    """The BPF filter: wrong arch → kill; each allowed call → allow; the four with argument
    rules → checked; clone3 → ENOSYS; everything else → EPERM."""
    table = SYSCALLS.get(MACHINE)
    if table is None:
        raise SeccompError(f"no system call table for {MACHINE}")
    prog = [
        _stmt(LD_W_ABS, OFF_ARCH),
        _jump(JEQ, AUDIT_ARCH[MACHINE], 1, 0),
        _stmt(RET, RET_KILL_PROCESS),
        _stmt(LD_W_ABS, OFF_NR),
    ]
    if MACHINE == "x86_64":
        prog += [_jump(JGE, X32_SYSCALL_BIT, 0, 1), DENY]
    for name in ALLOWED:
        if name in table:
            prog += [_jump(JEQ, table[name], 0, 1), ALLOW]
    prog += [_jump(JEQ, table["clone3"], 0, 1), _stmt(RET, _errno(errno.ENOSYS))]

    def only_when(name: str, check: list[bytes]) -> list[bytes]:
        return [_stmt(LD_W_ABS, OFF_NR), _jump(JEQ, table[name], 0, len(check)), *check]

    prog += only_when("clone", [_stmt(LD_W_ABS, OFF_ARG0), _jump(JSET, CLONE_THREAD, 1, 0),
                                DENY, ALLOW])  # fmt: skip
    # prlimit64(pid, resource, new_limit, old_limit): only with new_limit NULL (64 bits).
    prog += only_when("prlimit64", [
        _stmt(LD_W_ABS, OFF_ARG2), _jump(JEQ, 0, 0, 2),
        _stmt(LD_W_ABS, OFF_ARG2 + 4), _jump(JEQ, 0, 1, 0), DENY, ALLOW,
    ])  # fmt: skip
    prog += only_when("ioctl", _one_of(OFF_ARG1, IOCTLS))
    prog += only_when("fcntl", _one_of(OFF_ARG1, FCNTLS))
    return [*prog, DENY]


SECCOMP_MODE_FILTER = 2
PR_SET_SECCOMP = 22


def seccomp_filter() -> bytes:
    """The filter as the kernel reads it: built once, installed by each run."""
    return b"".join(program())


def install_seccomp(blob: bytes) -> None:
    buffer = ctypes.create_string_buffer(blob, len(blob))
    fprog = struct.pack("HxxxxxxP", len(blob) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        code = ctypes.get_errno()
        raise SeccompError(f"prctl(PR_SET_SECCOMP) failed: {os.strerror(code)} (errno {code})")


def seccomp_available() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False
