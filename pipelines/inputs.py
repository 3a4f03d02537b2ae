"""What the question-answering pipelines accept as input, read the same way by each."""

from __future__ import annotations

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
