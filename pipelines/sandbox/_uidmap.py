"""Programs of a normal user run under a uid that owns nothing on the host.

Standard library only (the worker and the zygote load it before they wall themselves in).

An unprivileged user namespace may map only its creator's own uid, so without help a
program would run as the caller, owner of the caller's files. Where the system gives the
user subordinate ids (/etc/subuid and /etc/subgid, made by `useradd`) and the setuid helpers
newuidmap and newgidmap (Debian's and Ubuntu's `uidmap`), the first user namespace maps
inside uid 0 to the caller (to build the private root with the caller's rights) and inside
uid 1 to the first subordinate uid; once the root is built the process becomes uid 1 for
good. A root caller's programs run as `nobody` instead (_walls.drop_root).
"""

from __future__ import annotations

import os
import pwd
import shutil
from typing import NamedTuple

try:  # loaded as part of the package (the host's checks), or top-level (the worker)
    from . import _walls
except ImportError:
    import _walls  # type: ignore[no-redef]

INSIDE = 1  # the uid and gid programs have in the first user namespace


class SubIds(NamedTuple):
    uid: int  # the caller's
    gid: int
    sub_uid: int  # what INSIDE maps to on the host
    sub_gid: int
    newuidmap: str
    newgidmap: str


def _first_range(path: str, names: tuple[str, ...]) -> int | None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]) if int(parts[2]) >= 1 else None
    return None


def subordinate_ids() -> SubIds | None:
    """This (non-root) user's first subordinate uid and gid and the helpers, if all exist."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    names = (name, str(uid))
    sub_uid = _first_range("/etc/subuid", names)
    sub_gid = _first_range("/etc/subgid", names)
    newuidmap = shutil.which("newuidmap", path="/usr/bin:/bin:/usr/sbin:/sbin")
    newgidmap = shutil.which("newgidmap", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if sub_uid is None or sub_gid is None or not newuidmap or not newgidmap:
        return None
    return SubIds(uid, gid, sub_uid, sub_gid, newuidmap, newgidmap)


def enter_mapped_user_namespace(ids: SubIds, flags: int, proc: int) -> bool:
    """unshare(CLONE_NEWUSER | flags), mapped by the setuid helpers run from outside it: a
    helper forked beforehand waits until this process has its namespace, then maps it.

    False when the helpers could not map it (inside another user namespace, a setuid binary
    is not setuid): then the namespace maps the caller's uid to itself, as without them."""
    me = os.getpid()
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # outside the new namespace: newuidmap must run from its parent's
        code = 1
        try:
            os.close(ready_w)
            if os.read(ready_r, 1) == b"+":
                code = 0
                for tool, own, sub in ((ids.newuidmap, ids.uid, ids.sub_uid),
                                       (ids.newgidmap, ids.gid, ids.sub_gid)):  # fmt: skip
                    argv = [tool, str(me), "0", str(own), "1", str(INSIDE), str(sub), "1"]
                    pid = os.posix_spawn(tool, argv, {})
                    if os.waitpid(pid, 0)[1] != 0:
                        code = 2
                        break
        finally:
            os._exit(code)
    os.close(ready_r)
    unshared = _walls.libc.unshare(_walls.CLONE_NEWUSER | flags) == 0
    os.write(ready_w, b"+" if unshared else b"-")
    os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if not unshared:
        raise _walls._fail("namespaces", "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    if status == 0:
        return True
    if os.waitstatus_to_exitcode(status) == 2 and _uid_mapped(proc):  # half done: no way back
        raise _walls.WallError(
            "uid", f"newgidmap could not map the subordinate gid {ids.sub_gid}"
        )  # fmt: skip
    _walls.write_id_maps(proc, ids.uid, ids.gid)
    return False


def _uid_mapped(proc: int) -> bool:
    fd = os.open("self/uid_map", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        return bool(os.read(fd, 4096).strip())
    finally:
        os.close(fd)


def become_inside_user() -> None:
    """After the root is built: uid and gid INSIDE for good (no capabilities left)."""
    _walls.become(INSIDE, f"becoming the subordinate uid (uid {INSIDE} inside)")


def describe_program_uid(inside: int) -> str:
    """What a program's uid `inside` (as it saw it) is on the host."""
    ids = subordinate_ids()
    if os.geteuid() == 0 and inside == _walls.UNPRIVILEGED_UID:
        return f"programs run as uid {inside} (nobody)"
    if ids is not None and inside == INSIDE:
        return f"programs run as uid {ids.sub_uid} on the host, a subordinate uid that owns nothing"
    return f"programs run as uid {inside}, the caller's own (no subordinate ids or newuidmap)"
