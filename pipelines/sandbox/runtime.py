"""Which files a sandboxed program may read: the Python runtime, nothing of the user's.

The standard library (without its site-packages), the system's shared libraries and time
zone data, and the package dirs of modules the caller explicitly allowed. Python may live
under the user's home (pyenv, a venv): only its runtime dirs are granted, never the home.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

SYSTEM_READABLE = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo", "/etc/localtime",
    "/dev/urandom", "/dev/zero",
)  # fmt: skip
_PACKAGE_DIRS = {"site-packages", "dist-packages"}


def stdlib_entries() -> list[str]:
    """Everything in the stdlib dir(s) except third-party package dirs inside them."""
    out: list[str] = []
    for key in ("stdlib", "platstdlib"):
        root = Path(sysconfig.get_path(key))
        if not root.is_dir():
            continue
        out += [str(p) for p in sorted(root.iterdir()) if p.name not in _PACKAGE_DIRS]
    return list(dict.fromkeys(out))


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
    paths = [*stdlib_entries(), *SYSTEM_READABLE]
    for name in extra_modules:
        where = _module_location(name)
        if where:
            paths.append(where[0])
            libs = Path(where[1]) / f"{name}.libs"  # wheels' vendored shared libraries
            if libs.is_dir():
                paths.append(str(libs))
    return list(dict.fromkeys(paths))


def sys_path_for(extra_modules: tuple[str, ...] = ()) -> list[str]:
    """sys.path entries the worker needs (the worker runs with -I -S: stdlib only)."""
    entries = []
    for name in extra_modules:
        where = _module_location(name)
        if where and not where[1].startswith(tuple(stdlib_entries())):
            entries.append(where[1])
    return list(dict.fromkeys(entries))
