"""JSON read strictly, for what comes from an untrusted writer (a sandboxed program's report,
a tool request over the agent's channel): no NaN or Infinity (which `json` accepts and
prints back as invalid JSON), no number too large to be finite (1e999), no repeated key
(where `json` silently keeps the last), and optionally no integer longer than a bound
(parsing a huge one costs quadratic time)."""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("a key is repeated")
    return doc


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is not a finite number")
    return value


def loads(text: str, *, max_int_digits: int | None = None) -> Any:
    """`json.loads`, strictly; ValueError (or RecursionError, for deep nesting) otherwise."""

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:  # type: ignore[operator]
            raise ValueError("an integer is too long")
        return int(digits)

    return json.loads(
        text,
        parse_constant=_no_constant,
        parse_float=_finite,
        parse_int=bounded_int if max_int_digits is not None else None,
        object_pairs_hook=_unique,
    )
