"""What pipelines and commands accept as input, read the same way by each: questions, and
the user's text files (specs, datasets, programs, standard input)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError


def question_text(value: Any, pipeline: str, example: str) -> str:
    """A question string, `{"question": ...}`, or a model with a `question` field."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "question" in value:
        return str(value["question"])
    if isinstance(getattr(value, "question", None), str):
        return str(value.question)
    raise UsageError(
        f"{pipeline} takes a question string or {{'question': ...}}, not {type(value).__name__}",
        hint=f"call {example}",
    )


def read_text(path: str | Path, what: str) -> str:
    """A user's text file as UTF-8, or a `UsageError` saying what is wrong with it.

    `what` names it for the message ("spec", "dataset", "program"...).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such {what} file: {path}", hint="check the path") from None
    except IsADirectoryError:
        raise UsageError(
            f"{path} is a folder, not a {what} file", hint=f"pass the {what} file itself"
        ) from None
    except PermissionError:
        raise UsageError(
            f"cannot read {what} {path}: permission denied", hint="check its permissions"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror}", hint="check the path"
        ) from None
    return decode_text(data, f"{what} {path}")


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a BOM is dropped), refusing binary data and other encodings by name."""
    if b"\0" in data[:8192]:
        raise UsageError(f"{source} is binary, not UTF-8 text", hint="pass a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="convert it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`",
        ) from None


def writable_folder(path: str | Path, what: str) -> Path:
    """A folder llamapipe may write in, made when missing, or a `UsageError` saying why not.

    Checked before any work starts, so a bad output path costs nothing.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(
            f"{what} {path} is a file, not a folder", hint="pass a folder path"
        ) from None
    except NotADirectoryError:
        raise UsageError(
            f"cannot make {what} {path}: part of the path is a file", hint="pass a folder path"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot make {what} {path}: {exc.strerror}",
            hint="pass a folder you can write to",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write in {what} {path}: permission denied",
            hint="pass a folder you can write to",
        )
    return path
