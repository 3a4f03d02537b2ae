"""The RAG eval's optional judge: a model asked whether each answer says what the reference
says (prompts/evals/judge.jinja). Off unless a spec sets `judge:`; its score,
`judged_correctness`, is a model's opinion, and the reports say so and which model gave it.

    judge: {backend: ollama, model: llama3.1:8b, params: {temperature: 0}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evals.context import RunContext, backend_for
from evals.correctness import normalise

if TYPE_CHECKING:
    from evals.spec import JudgeSpec

JUDGED = "judged_correctness"
PROMPT = "evals/judge"


def reference_text(item: dict[str, Any]) -> str:
    return str(item.get("reference") or " / ".join(map(str, item.get("answers") or [])))


def judge_backend(ctx: RunContext, judge: JudgeSpec) -> tuple[Any, Any]:
    """The judge's backend and settings, made as a system's are (and shared like them)."""
    from evals.spec import SystemSpec

    system = SystemSpec.model_validate({"name": "judge", **judge.model_dump()})
    return backend_for(ctx, system)


def verdict(ctx: RunContext, judge: JudgeSpec, item: dict[str, Any], answer: Any) -> float | None:
    """100 when the judge says CORRECT, else 0; None where there is nothing to judge
    against (unanswerable, no reference). An abstention is not an answer: 0, not asked."""
    from prompts import load_prompt

    reference = reference_text(item)
    if not item.get("answerable", True) or not reference:
        return None
    if answer.abstained:
        return 0.0
    backend, _ = judge_backend(ctx, judge)
    prompt = load_prompt(PROMPT).invoke(
        {"question": item["question"], "reference": reference, "answer": answer.answer}
    )
    reply = backend.chat.invoke(prompt)
    words = normalise(reply.text if hasattr(reply, "text") else str(reply)).split()
    return 100.0 * (words[:1] == ["correct"])
