"""Answers compared the way a person would: 8, 8.0, "8", "$8" and "8 apples" agree.

`answer_key` maps a value to a canonical key for voting and scoring; `parse_answer` pulls
the answer out of free text (the chain-of-thought and direct baselines).
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_UNITS = re.compile(
    r"^[\s$€£₩¥]*(.*?)[\s%]*(?:원|개|명|자루|마리|권|살|cm|kg|달러|dollars?)?\.?\s*$"
)


def as_number(value: Any) -> Fraction | None:
    """The value as an exact number, if it is one (bools are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).strip()
        match = _UNITS.match(text)
        core = (match.group(1) if match else text).replace(",", "").strip()
        try:
            if "/" in core:
                num, _, den = core.partition("/")
                return Fraction(int(num), int(den))
            return Fraction(Decimal(core))
        except (ValueError, ZeroDivisionError, InvalidOperation):
            return None
    return None


def answer_key(value: Any) -> str:
    """A canonical key: numbers by value (rounded to 1e-6), text case- and space-folded."""
    number = as_number(value)
    if number is not None:
        rounded = round(number, 6)
        return f"num:{rounded.numerator}/{rounded.denominator}"
    if isinstance(value, list):
        return "list:[" + ",".join(answer_key(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ",".join(f"{k}={answer_key(v)}" for k, v in sorted(value.items()))
        return "dict:{" + inner + "}"
    text = unicodedata.normalize("NFKC", str(value)).strip().strip(".").casefold()
    return "text:" + " ".join(text.split())


def same_answer(a: Any, b: Any) -> bool:
    return answer_key(a) == answer_key(b)


def display(value: Any) -> str:
    """How an answer is shown in votes: integral numbers without '.0'."""
    number = as_number(value)
    if number is not None and not isinstance(value, str):
        if number.denominator == 1:
            return str(number.numerator)
        return repr(float(number)) if isinstance(value, float) else str(value)
    return value if isinstance(value, str) else repr(value)


_ANSWER_IS = re.compile(
    r"(?:answer\s+is|answer:|정답은|답은|답:)\s*[:\s]*(.+?)(?:\.\s|\.$|\n|$)", re.IGNORECASE
)


_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}")


def parse_answer(text: str) -> str | None:
    """The final answer in free text: after "the answer is", else the last number."""
    matches = _ANSWER_IS.findall(text)
    if matches:
        answer = matches[-1].strip().strip("*").strip()
        if _DATE.fullmatch(answer):
            return answer
        number = _NUMBER.findall(answer)
        return number[0].replace(",", "") if number and as_number(answer) is None else answer
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    stripped = text.strip().splitlines()
    return stripped[-1].strip() if stripped else None
