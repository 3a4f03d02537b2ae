"""The llama.cpp build inside llama-cpp-python: what it has, and keeping models off its unsafe path.

llama.cpp's AMX kernels (Intel Sapphire Rapids and later, when built with -march=native)
crash in `ggml_backend_amx_mul_mat` on any prompt longer than one token (llama.cpp issue
#20824; Ollama stopped building them, DSPy's CI dropped them). `make install` therefore
builds llama-cpp-python without AMX (`-mno-amx-*`, see the Makefile), which reaches every
user of the build, `python -m llama_cpp.server` included, and checks the result with
`python -m pipelines.backends.llama_build --check`.

A build made elsewhere (a plain `pip install llamapipe`) may still have the AMX kernels.
Then every model llamapipe loads has llama.cpp's extra buffer types switched off, which keeps
the weights out of the AMX buffer: slower on those CPUs, but it does not crash.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

AMX_FEATURE = "AMX_INT8 = 1"


def import_llama_cpp() -> Any:
    """`import llama_cpp`, with OpenMP's idle threads set to sleep rather than spin.

    llama.cpp's OpenMP threads spin while they wait for work. Alone that is harmless; with
    two llamapipe processes on the same cores (a scheduled eval while you chat) the spinning
    threads starve each other and prompt reading ran 4-8x slower (`bench/generation.py`).
    Passive waiting costs nothing measurable alone. Set before the library loads (OpenMP
    reads it once); a value you set yourself wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp

    return llama_cpp


def llama_cpp_version() -> str | None:
    """llama-cpp-python's version, or None when it is not installed (without langchain)."""
    try:
        return str(import_llama_cpp().__version__)
    except ImportError:
        return None


BUILD_FILE = "llama-build.json"


def build_facts(cache_dir: Path) -> tuple[str | None, bool | None]:
    """(llama-cpp-python's version, whether its build has AMX kernels), for `models`; (None,
    None) when it is not installed. Loading the library to ask costs 0.2-1 s (numpy and
    llama.cpp's shared objects), so the answer is kept in `cache_dir`, keyed by the installed
    files' sizes and times: a rebuild or reinstall is asked again."""
    key = _installed_files()
    if key is None:
        return None, None
    cache = cache_dir / BUILD_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if kept["files"] == key:
            return kept["version"], kept["amx"]
    version = llama_cpp_version()
    if version is None:
        return None, None
    amx = has_amx()
    with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
        cache.parent.mkdir(parents=True, exist_ok=True)
        scratch = cache.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps({"files": key, "version": version, "amx": amx}))
        scratch.replace(cache)
    return version, amx


def _installed_files() -> str | None:
    """The llama_cpp package's __init__ and shared objects, as name:size:mtime (not loaded)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    init = Path(spec.origin)
    files = [init, *sorted((init.parent / "lib").glob("*.so*"))]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


@cache
def system_info() -> str:
    """llama.cpp's own account of its build (`CPU : SSE3 = 1 | ... | AMX_INT8 = 1 | ...`)."""
    llama_cpp = import_llama_cpp()
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace").strip()


def has_amx() -> bool:
    """Whether this build carries llama.cpp's AMX kernels (only x86 builds with AMX do)."""
    return AMX_FEATURE in system_info()


@contextlib.contextmanager
def safe_model_params() -> Iterator[None]:
    """Around `Llama(...)`: on a build with AMX kernels, load with extra buffer types off.

    llama-cpp-python's `Llama` takes no such argument; it reads its defaults from
    `llama_model_default_params()`, so that function is wrapped while the model loads
    (callers hold the loader lock, so no other load sees the wrapper).
    """
    if not has_amx():
        yield
        return
    from llama_cpp import llama_cpp as low_level

    original = low_level.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


def main(argv: list[str]) -> int:
    """`--check`: exit 1, saying why, when the installed build has the AMX kernels."""
    try:
        info = system_info()
    except ImportError:
        print("llama-cpp-python is not installed", file=sys.stderr)
        return 1
    if "--check" in argv and AMX_FEATURE in info:
        print(
            "llama-cpp-python was built with llama.cpp's AMX kernels, which crash on this CPU.\n"
            "It came from pip's wheel cache or was built without the Makefile's flags; "
            "rebuild it: `make install` (it rebuilds when this check fails).",
            file=sys.stderr,
        )
        return 1
    print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
