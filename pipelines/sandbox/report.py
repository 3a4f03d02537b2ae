"""What crosses back from a run: its report, parsed strictly, and how it ended, as a
`SandboxResult`.

The program can write on its report's pipe itself, so the host takes nothing on trust: only
bytes cross, parsed as bounded, strict JSON of the expected shape; the host never unpickles
anything or touches an object the program made.
"""

from __future__ import annotations

import signal
from typing import Any

from pipelines import strict_json
from pipelines.sandbox.limits import Limits
from pipelines.sandbox.result import ErrorInfo, Isolation, Killed, SandboxResult

_SIGNALS = {int(s): s.name for s in signal.Signals}


def build_result(
    raw: bytes,
    stdout: bytes,
    stderr: bytes,
    killed: Killed | None,
    returncode: int,
    duration_ms: float,
    limits: Limits,
    isolation: Isolation,
) -> SandboxResult:
    out_cap = limits.output_kb << 10
    doc = parse_report(raw, limits) if killed is None else None
    error: ErrorInfo | None = None
    ok = False
    result: Any = None
    if killed == "timeout":
        error = ErrorInfo(
            type="Timeout",
            message=f"the program ran longer than {limits.timeout:g} s and was stopped",
        )
    elif killed == "output":
        error = ErrorInfo(
            type="OutputLimit",
            message=f"the program wrote more than {limits.output_kb} KiB and was stopped",
        )
    elif killed == "memory":
        error = ErrorInfo(
            type="MemoryLimit",
            message=f"the program used more than {limits.memory_mb} MiB of memory (all of it, "
            "as its cgroup counts: heap, scratch files, kernel buffers) and was stopped",
        )
    elif doc is not None:
        ok, result = bool(doc["ok"]), doc["result"]
        error = ErrorInfo(**doc["error"]) if doc["error"] else None
        if doc["memory"]:
            killed = "memory"
    elif raw.strip():
        error = ErrorInfo(
            type="ResultError", message="the program's report was malformed (it wrote on it)"
        )
    else:
        signum = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
        if signum == signal.SIGXCPU:
            killed = "timeout"
            message = f"the program used more than {limits.timeout:g} s of CPU and was stopped"
        else:
            killed = "signal"
            name = _SIGNALS.get(signum, f"exit status {returncode}")
            message = f"the program's process died ({name}) before reporting a result"
        error = ErrorInfo(type="Killed", message=message)
    return SandboxResult(
        ok=ok and killed is None,
        result=result,
        stdout=stdout[:out_cap].decode("utf-8", "replace"),
        stderr=stderr[:out_cap].decode("utf-8", "replace"),
        error=error,
        killed=killed,
        duration_ms=round(duration_ms, 3),
        isolation=isolation,
    )


REPORT_KEYS = {"ok", "result", "error", "memory"}
INT_BITS = 128  # the worker sends larger integers as text


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")  # a lone surrogate (JSON's "\ud800") is not Unicode
    except UnicodeEncodeError:
        return False
    return True


def within_limits(value: Any, limits: Limits) -> bool:
    """The result holds what the worker's own walk lets through: nesting, item count, integer
    size and valid text, each within `limits` (a program may forge its report)."""
    budget = limits.result_items
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > limits.result_depth:
            return False
        if isinstance(item, str):
            if not _valid_text(item):
                return False
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > INT_BITS:
                return False
        elif isinstance(item, list):
            stack += [(x, depth + 1) for x in item]
        elif isinstance(item, dict):
            if not all(_valid_text(k) for k in item):
                return False
            stack += [(x, depth + 1) for x in item.values()]
    return True


def parse_report(raw: bytes, limits: Limits) -> dict[str, Any] | None:
    """The worker's JSON, checked for shape; None when it is missing or malformed.

    The program can write on the report's pipe itself, so nothing is taken on trust: valid
    UTF-8 and strict JSON (no NaN or Infinity, which json would accept and print back as
    invalid JSON; no repeated key), exactly the four keys, booleans where booleans belong,
    the error's fields as valid text, and a result within the result limits."""
    try:
        doc = strict_json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or set(doc) != REPORT_KEYS:
        return None
    if type(doc["ok"]) is not bool or type(doc["memory"]) is not bool:
        return None
    err = doc["error"]
    if err is not None and not (
        isinstance(err, dict)
        and set(err) <= set(ErrorInfo.FIELDS)
        and all(isinstance(err.get(k), str) and _valid_text(err[k]) for k in ErrorInfo.FIELDS)
    ):
        return None
    if not within_limits(doc["result"], limits):
        return None
    return doc
