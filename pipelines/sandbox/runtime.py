"""What a sandboxed program sees: the Python runtime, nothing of the user's.

The standard library (without third-party package dirs inside it), time zone data, three
devices, the package dirs of modules the caller explicitly allowed, and (added where the
view is built) the shared libraries the process has loaded. Python may live under the
user's home (pyenv, a venv): only its runtime dirs are in view, never the home.
`_root.enter_private_root` binds these, read-only, into an empty root of the program's own.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sysconfig
from pathlib import Path

# Shared libraries are not listed: the view holds those the process has loaded (see
# _root.mapped_files), not every library of the system.
SYSTEM_READABLE = (
    "/usr/share/zoneinfo", "/etc/localtime", "/dev/null", "/dev/zero", "/dev/urandom",
)  # fmt: skip
_PACKAGE_DIRS = ("site-packages", "dist-packages")


@functools.cache
def _stdlib_roots() -> tuple[str, ...]:
    roots = [sysconfig.get_path(key) for key in ("stdlib", "platstdlib")]
    return tuple(
        root
        for root in dict.fromkeys(r for r in roots if r and os.path.isdir(r))
        if any(entry.name not in _PACKAGE_DIRS for entry in os.scandir(root))
    )


def stdlib_roots() -> list[str]:
    """The standard library's dir(s); not a venv's lib dir, which holds only site-packages.
    Read once per process: every worker's config needs it."""
    return list(_stdlib_roots())


def hidden_paths() -> list[str]:
    """Third-party package dirs inside the standard library's dir (pyenv and python.org
    builds keep site-packages there): covered, so only allowed modules are in view."""
    return [
        str(Path(root) / name)
        for root in stdlib_roots()
        for name in _PACKAGE_DIRS
        if (Path(root) / name).is_dir()
    ]


def _module_location(name: str) -> tuple[str, str] | None:
    """(path to grant, sys.path entry) for an installed top-level module, else None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    if spec.submodule_search_locations:
        pkg = os.path.dirname(spec.origin)
        return pkg, os.path.dirname(pkg)
    return spec.origin, os.path.dirname(spec.origin)


def readable_paths(extra_modules: tuple[str, ...] = ()) -> list[str]:
    paths = [*stdlib_roots(), *SYSTEM_READABLE]
    for name in extra_modules:
        where = _module_location(name)
        if where:
            paths.append(where[0])
            libs = Path(where[1]) / f"{name}.libs"  # wheels' vendored shared libraries
            if libs.is_dir():
                paths.append(str(libs))
    return list(dict.fromkeys(paths))


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def sys_path_for(extra_modules: tuple[str, ...] = ()) -> list[str]:
    """sys.path entries the worker needs (the worker runs with -I -S: stdlib only)."""
    roots, hidden = stdlib_roots(), hidden_paths()
    entries = []
    for name in extra_modules:
        where = _module_location(name)
        if where and not (_inside(where[1], roots) and where[1] not in hidden):
            entries.append(where[1])
    return list(dict.fromkeys(entries))
