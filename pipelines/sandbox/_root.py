"""The private root: a run sees only the Python runtime, bound read-only into an empty tmpfs.

Standard library only, like `_walls` (the worker and the zygote load both before they wall
themselves in). Built once per zygote, or once per fresh worker, before anything else:

1. a mount namespace of its own: as root, directly (real root can still read a Python that
   lives under a home nobody else may enter, such as /root/.pyenv); otherwise inside a new
   user namespace that maps the caller's uid to itself, or, where the system has subordinate
   ids, to inside uid 0 (uid 1 is a subordinate uid, which the process becomes once the
   root is built: _uidmap);
2. an empty tmpfs; every readable path, and every file the process has mapped (the
   interpreter and the shared libraries it and the preloaded modules loaded), is bound into
   it at its own absolute path, read-only, nosuid, nodev (symlinks on the way are made
   again, so the paths Python knows stay valid); package dirs inside the standard library
   (pyenv's site-packages) are covered by an empty tmpfs; /dev/null, /dev/zero and
   /dev/urandom are bound as the only devices;
3. everything made read-only, then `pivot_root` into it and the old root detached.

Afterwards no host path outside the view can be opened, stat'ed or listed, and there is no
/proc: the caller keeps a descriptor of the host's /proc (returned) for the few writes the
namespaces need (uid_map), and closes it before any program runs.
"""

from __future__ import annotations

import ctypes
import os
import struct

try:  # loaded as part of the package (the host's `sandbox check`), or top-level (the worker)
    from . import _uidmap, _walls
except ImportError:
    import _uidmap  # type: ignore[no-redef]
    import _walls  # type: ignore[no-redef]

libc = _walls.libc
libc.umount2.restype = ctypes.c_int

WALL = "private root"
MS_NOSUID, MS_NODEV = 2, 4
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 4
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
READ_ONLY = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
STAGE = "/tmp"  # where the new root is put together, in this mount namespace only


def _fail(what: str) -> _walls.WallError:
    return _walls._fail(WALL, what)


def enter_private_root(readable: list[str], hidden: list[str]) -> int:
    """Build the view and move into it; return an O_PATH descriptor of the host's /proc.

    `readable`: paths bound read-only at their own place; `hidden`: dirs inside those
    covered by an empty tmpfs. Must run before the process has threads.
    """
    with _walls.step(WALL, "opening /proc"):
        proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        readable = [*readable, *mapped_files()]
    try:
        ids = _own_mount_namespace(proc)
        old_umask = os.umask(0o022)  # whatever the caller's umask, `nobody` may traverse
        try:
            with _walls.step(WALL, "making the new root's dirs and links"):
                _build(readable, hidden)
        finally:
            os.umask(old_umask)
        with _walls.step(WALL, "moving into the new root"):
            _pivot()
        if ids is not None:
            _uidmap.become_inside_user()
    except BaseException:
        os.close(proc)
        raise
    return proc


def mapped_files() -> list[str]:
    """The files this process has mapped: the interpreter and the shared libraries that it
    and the preloaded modules loaded. Those are the shared libraries in view; a library
    loaded again by name is found among the loaded ones without opening a file."""
    found: dict[str, None] = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                path = fields[5].rstrip("\n")
                if not path.endswith(" (deleted)"):
                    found[path] = None
    return list(found)


def _own_mount_namespace(proc: int) -> _uidmap.SubIds | None:
    """A mount namespace of its own. Real root needs no user namespace for it, and keeps the
    right to read a Python only root may reach; anyone else gets a user namespace that owns
    it: mapped to a subordinate uid where the system has them (returned), else to itself."""
    ids = _uidmap.subordinate_ids()
    if ids is not None:
        if not _uidmap.enter_mapped_user_namespace(ids, _walls.CLONE_NEWNS, proc):
            ids = None
    else:
        flags = _walls.CLONE_NEWNS
        if os.geteuid() != 0:
            flags |= _walls.CLONE_NEWUSER
        _walls.enter_namespaces(flags, proc)
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise _fail("making / private")
    return ids


def _chain(path: str) -> tuple[list[tuple[str, str]], str]:
    """The symlinks met on the way to `path` (each as link, target) and its real path."""
    links: list[tuple[str, str]] = []
    done, todo = "/", _parts(path)
    while todo:
        candidate = os.path.join(done, todo.pop(0))
        if not os.path.islink(candidate):
            done = candidate
            continue
        if len(links) == 40:  # the kernel's own limit on links in one lookup
            raise _walls.WallError(WALL, f"too many symbolic links on the way to {path}")
        target = os.readlink(candidate)
        links.append((candidate, target))
        todo = _parts(os.path.join(done, target)) + todo  # an absolute target resets `done`
        done = "/"
    return links, done


def _parts(path: str) -> list[str]:
    return [p for p in os.path.normpath(path).split("/") if p]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


Op = tuple[str, str, bool]  # (kind, path, is a dir): kind "bind", "dev", "hide" or "link"


def _plan(readable: list[str], hidden: list[str]) -> list[Op]:
    """The mounts and links to make, in order. A path inside a bound tree needs nothing of
    its own; a link is ("link", "path\0target", False)."""
    wanted: dict[str, str] = {}
    links: dict[str, str] = {}
    for path in readable:
        if not os.path.lexists(path):
            continue
        chain, real = _chain(path)
        links.update(chain)
        if os.path.exists(real):
            wanted.setdefault(real, "dev" if real in DEVICES else "bind")
    for path in hidden:
        if os.path.isdir(path):
            wanted[os.path.realpath(path)] = "hide"
    ops: list[Op] = []
    made: list[tuple[str, str]] = []  # (path, kind) of what is mounted so far
    for path in sorted(wanted, key=lambda p: p.split("/")):
        kind = wanted[path]
        inner = [k for top, k in made if _under(path, top)]
        if inner and inner[-1] in ("bind", "dev") and kind != "hide":
            continue  # already in view through its parent
        if kind == "hide" and not (inner and inner[-1] == "bind"):
            continue  # nothing bound there to hide
        made.append((path, kind))
        ops.append((kind, path, os.path.isdir(path)))
    for link, target in links.items():
        if not any(_under(link, top) and top != link for top, _ in made):
            ops.append(("link", f"{link}\0{target}", False))
    return ops


# Bound trees that each run's scratch tmpfs on /tmp would cover (a Python kept under /tmp):
# each run binds them again on top of its scratch. Set by `_build`, inherited by forks.
UNDER_SCRATCH: list[str] = []


def _build(readable: list[str], hidden: list[str]) -> None:
    plan = _plan(readable, hidden)
    # Detached copies of each tree, taken before the stage covers /tmp (where a runtime may
    # live), made read-only (devices: /dev/null stays writable) before they are attached.
    trees: dict[str, int] = {}
    try:
        for kind, what, _ in plan:
            if kind in ("bind", "dev"):
                attrs = READ_ONLY
                if kind == "dev":
                    attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
                    attrs |= 0 if what == "/dev/null" else MOUNT_ATTR_RDONLY
                trees[what] = clone_tree(what, attrs)
        if libc.mount(b"tmpfs", STAGE.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                      b"size=1m,nr_inodes=4096,mode=0755") != 0:  # fmt: skip
            raise _fail(f"mounting the new root's tmpfs on {STAGE}")
        tmpfs = [STAGE]
        for kind, what, is_dir in plan:
            if kind == "link":
                link, target = what.split("\0")
                staged = STAGE + link
                os.makedirs(os.path.dirname(staged), exist_ok=True)
                if not os.path.lexists(staged):
                    os.symlink(target, staged)
            elif kind == "hide":
                staged = STAGE + what
                if libc.mount(b"tmpfs", staged.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                              b"size=64k,nr_inodes=256,mode=0755") != 0:  # fmt: skip
                    raise _fail(f"covering {what}")
                tmpfs.append(staged)
            else:
                attach_tree(trees.pop(what), STAGE + what, is_dir=is_dir)
        os.makedirs(STAGE + "/tmp", mode=0o755, exist_ok=True)  # each run's scratch goes here
        for path in reversed(tmpfs):
            _set_attrs(AT_FDCWD, path, READ_ONLY, 0)
    finally:
        for fd in trees.values():
            os.close(fd)
    UNDER_SCRATCH[:] = [what for kind, what, _ in plan if kind != "link" and _under(what, "/tmp")]


def clone_tree(path: str, attrs: int) -> int:
    """A detached copy of the mount tree at `path`, with `attrs` set on all of it."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    fd = libc.syscall(_walls._nr("open_tree"), AT_FDCWD, path.encode(), flags)
    if fd < 0:
        raise _fail(f"open_tree({path})")
    try:
        _set_attrs(fd, "", attrs, AT_EMPTY_PATH | AT_RECURSIVE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach_tree(fd: int, target: str, *, is_dir: bool) -> None:
    """Mount a detached tree (`clone_tree`) at `target`, made as a mount point; close `fd`."""
    try:
        os.makedirs(target if is_dir else os.path.dirname(target), exist_ok=True)
        if not is_dir and not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        nr = _walls._nr("move_mount")
        if libc.syscall(nr, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
            raise _fail(f"move_mount(... {target})")
    finally:
        os.close(fd)


def keep_over_scratch() -> list[tuple[int, str, bool]]:
    """Before a run's scratch tmpfs covers /tmp: copies of the runtime trees under it."""
    return [(clone_tree(path, READ_ONLY), path, os.path.isdir(path)) for path in UNDER_SCRATCH]


def attach_over_scratch(trees: list[tuple[int, str, bool]]) -> None:
    for fd, path, is_dir in trees:
        attach_tree(fd, path, is_dir=is_dir)


def _set_attrs(dirfd: int, path: str, attrs: int, flags: int) -> None:
    attr = struct.pack("QQQQ", attrs, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns
    nr = _walls._nr("mount_setattr")
    if libc.syscall(nr, dirfd, path.encode(), flags, attr, len(attr)) != 0:
        raise _fail(f"mount_setattr({path or 'a detached tree'})")


def _pivot() -> None:
    os.chdir(STAGE)
    # pivot_root(".", "."): the old root ends up on top of the new one, then goes.
    if libc.syscall(_walls._nr("pivot_root"), b".", b".") != 0:
        raise _fail("pivot_root")
    if libc.umount2(b".", MNT_DETACH) != 0:
        raise _fail("detaching the old root")
    os.chdir("/")
