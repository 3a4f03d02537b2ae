"""Whether a RAG answer is right, against the dataset's references.

An item holds short answers (`"answers": ["일연"]`, any of them counts: found in the
answer, after normalising case, width and punctuation) or a free-text `"reference"`
(scored with chrF). Either way only what the answer adds to the question is scored: words
the question already holds are left out of the answer (and of a reference), so an answer
that echoes the question scores 0. Only answerable items with references are scored (an
abstention there scores 0); whether a system abstains where it should is abstention
accuracy's part. A dataset with no references at all is not scored on it (the report says).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sacrebleu.metrics import CHRF

METRIC = "answer_correctness"


def normalise(text: str) -> str:
    """NFKC, case folded, punctuation and symbols as spaces, spaces squeezed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = (" " if unicodedata.category(c)[0] in "PSZ" else c for c in text)
    return " ".join("".join(kept).split())


def beyond(text: str, question: str) -> str:
    """`text` without the words the question already holds (normalised)."""
    asked = set(normalise(question).split())
    return " ".join(w for w in normalise(text).split() if w not in asked)


def has_references(item: dict[str, Any]) -> bool:
    return bool(item.get("answers") or item.get("reference"))


def score(item: dict[str, Any], output: str, abstained: bool) -> float | None:
    """0-100: 100 for a short answer found, chrF for free text; None: not scored (the item
    is unanswerable, or has no references)."""
    if not item.get("answerable", True) or not has_references(item):
        return None
    if abstained:
        return 0.0
    question, added = str(item["question"]), beyond(output, str(item["question"]))
    if item.get("answers"):
        wanted = [normalise(str(a)) for a in item["answers"]]
        return 100.0 * any(w and w in added for w in wanted)
    reference = beyond(str(item["reference"]), question)
    if not added:
        return 0.0
    return round(float(CHRF().sentence_score(added, [reference]).score), 4)
