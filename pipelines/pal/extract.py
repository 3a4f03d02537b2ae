"""Find the program in a model's reply: fences, chatter and all.

Models wrap programs in markdown fences (or not), talk before and after, write several
blocks, or forget `solution()`. `extract_program` returns source that defines
`solution()` and parses, or raises `NoProgramError` saying what was wrong, which goes back
to the model as feedback when retries are left.
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_SOLUTION = re.compile(r"^(?:async\s+)?def\s+solution\s*\(", re.MULTILINE)


# Lines that belong to a program above solution(): imports, helpers, constants, comments.
_CODE_LINE = re.compile(
    r"(import \S|from \S+ import |def \w+\(|class \w+|@\w|[A-Za-z_]\w* = |#|\s+\S)"
)


class NoProgramError(ValueError):
    """The reply holds no usable program; the message is fit to send back to the model."""


def extract_program(reply: str, *, prefix: str = "") -> str:
    """The program in `reply` (after `prefix`, for completion prompts that began it)."""
    text = prefix + reply if prefix and not _SOLUTION.search(reply) else reply
    text = text.replace("\r\n", "\n")
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    candidates = [b for b in blocks if _SOLUTION.search(b)]
    if not candidates and _SOLUTION.search(text):
        candidates = [_from_first_code_line(text)]
    if not candidates:
        if blocks or _looks_like_code(text):
            raise NoProgramError(
                "the program does not define solution(); define it and return the answer"
            )
        raise NoProgramError(
            "the reply holds no Python program; write one with a solution() function"
        )
    errors = []
    for candidate in candidates:
        program = _parseable_prefix(_dedent(candidate))
        if program is None:
            errors.append(candidate)
            continue
        if _defines_solution(program):
            return program
    try:
        ast.parse(_dedent(errors[0]))
    except SyntaxError as exc:
        raise NoProgramError(f"the program does not parse: line {exc.lineno}: {exc.msg}") from None
    raise NoProgramError("the program does not define solution(); define it and return the answer")


def _from_first_code_line(text: str) -> str:
    """From the first line that starts the program (imports or `def solution`) onward."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if _SOLUTION.match(line.lstrip()))
    while start > 0 and (not lines[start - 1].strip() or _CODE_LINE.match(lines[start - 1])):
        start -= 1
    return "\n".join(lines[start:]).strip("\n")


def _parseable_prefix(code: str) -> str | None:
    """The longest run of leading lines that parses (chatter after the code is cut)."""
    lines = code.rstrip().split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        if _defines_solution(candidate):
            return candidate + "\n"
    return None


def _defines_solution(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "solution"
        for node in tree.body
    )


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code)


def _looks_like_code(text: str) -> bool:
    return bool(re.search(r"^\s*(def |import |from \S+ import |return )", text, re.MULTILINE))
