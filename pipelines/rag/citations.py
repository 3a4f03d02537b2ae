"""Citations that can be checked: every one points at a retrieved chunk and quotes it exactly.

The model numbers its claims with `[n]` markers. Here each marker is validated by
construction: `n` must be a source that was actually in the prompt, and the quote is cut
from that source's stored text by offsets (`text[start:end] == quote`, always). Markers
that point nowhere are dropped from the answer and counted. A sentence the model left
uncited is attributed to the retrieved chunk that clearly supports it (most of its words
are there), or listed as unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from pydantic import BaseModel

from pipelines.rag.chunking import sentence_spans
from pipelines.rag.tokenize import tokenize

MARKER = re.compile(r"\s?\[(\d+(?:\s*[,;]\s*\d+)*)\]")
SUPPORT = 0.5  # share of a sentence's tokens a passage must contain to support it
ECHO_NEW_TERMS = 0.2  # a sentence with at most this share of terms not in the question echoes it


class Citation(BaseModel):
    n: int
    source: str
    chunk_id: str
    start: int
    end: int
    quote: str
    page: int | None = None
    attributed: bool = False  # added here for an uncited sentence, not by the model
    supported: bool = True  # the quote contains most of the cited sentence's words


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the prompt numbered it."""

    n: int
    source: str
    chunk_id: str
    start: int
    end: int
    page: int | None


@dataclass
class Checked:
    answer: str
    citations: list[Citation]
    dropped_markers: int
    unsupported: list[str]


def _overlap(sentence_tokens: set[str], text: str) -> float:
    if not sentence_tokens:
        return 0.0
    return len(sentence_tokens & set(tokenize(text))) / len(sentence_tokens)


def _best_span(doc: str, passage: Passage, tokens: set[str]) -> tuple[int, int, float]:
    """The shortest span of the passage (a sentence, two adjacent ones, or the whole passage)
    that supports `tokens` about as well as anything in it does."""
    sentences = sentence_spans(doc, passage.start, passage.end)
    candidates = [(passage.start, passage.end), *sentences]
    candidates += [(a[0], b[1]) for a, b in pairwise(sentences)]
    scored = [(start, end, _overlap(tokens, doc[start:end])) for start, end in candidates]
    best = max(score for _, _, score in scored)
    close = [c for c in scored if c[2] >= best - 0.15 and (c[2] > 0 or best == 0)]
    return min(close, key=lambda c: (c[1] - c[0], -c[2]))


def check(
    answer: str, passages: list[Passage], text_of: Callable[[str], str], question: str = ""
) -> Checked:
    """Validate the model's markers, cut exact quotes, attribute or flag uncited sentences.

    An uncited sentence that only repeats the question (small models echo it) claims
    nothing, so it gets no citation and is not listed as unsupported.
    """
    by_n = {p.n: p for p in passages}
    asked = set(tokenize(question))
    docs: dict[str, str] = {}

    def doc(source: str) -> str:
        if source not in docs:
            docs[source] = text_of(source)
        return docs[source]

    citations: dict[tuple[int, int, int], Citation] = {}
    dropped = 0
    unsupported: list[str] = []
    pieces: list[str] = []
    for sentence, gap in _sentences(answer):
        numbers = [int(x) for m in MARKER.finditer(sentence) for x in re.split(r"[,;]", m.group(1))]
        valid = [n for n in dict.fromkeys(numbers) if n in by_n]
        dropped += len(numbers) - len([n for n in numbers if n in by_n])
        bare = MARKER.sub("", sentence).strip()
        tokens = set(tokenize(bare))
        kept = sentence if len(valid) == len(numbers) else _keep_markers(sentence, set(valid))
        if valid:
            for n in valid:
                p = by_n[n]
                start, end, score = _best_span(doc(p.source), p, tokens)
                _add(
                    citations,
                    p,
                    doc(p.source),
                    start,
                    end,
                    attributed=False,
                    supported=score >= SUPPORT,
                )
        elif tokens and len(tokens - asked) <= ECHO_NEW_TERMS * len(tokens):
            pass  # an echo of the question: nothing to cite
        elif tokens:
            best = max(
                ((p, *_best_span(doc(p.source), p, tokens)) for p in passages),
                key=lambda item: item[3],
                default=None,
            )
            if best is not None and best[3] >= SUPPORT and len(tokens) >= 2:
                p, start, end, _ = best
                _add(citations, p, doc(p.source), start, end, attributed=True, supported=True)
                kept = _append_marker(kept, p.n)
            else:
                unsupported.append(bare)
        pieces.append(kept + gap)
    ordered = sorted(citations.values(), key=lambda c: (c.n, c.start))
    return Checked("".join(pieces).strip(), ordered, dropped, unsupported)


def _add(
    found: dict[tuple[int, int, int], Citation],
    p: Passage,
    doc: str,
    start: int,
    end: int,
    *,
    attributed: bool,
    supported: bool,
) -> None:
    key = (p.n, start, end)
    if key not in found:
        found[key] = Citation(
            n=p.n, source=p.source, chunk_id=p.chunk_id, start=start, end=end,
            quote=doc[start:end], page=p.page, attributed=attributed, supported=supported,
        )  # fmt: skip


def _append_marker(sentence: str, n: int) -> str:
    body = sentence.rstrip()
    if body and body[-1] in ".!?。":
        return f"{body[:-1]} [{n}]{body[-1]}"
    return f"{body} [{n}]"


def _keep_markers(sentence: str, valid: set[int]) -> str:
    def keep(match: re.Match[str]) -> str:
        numbers = [x.strip() for x in re.split(r"[,;]", match.group(1)) if int(x) in valid]
        return f" [{', '.join(numbers)}]" if numbers else ""

    return MARKER.sub(keep, sentence)


_SENTENCE = re.compile(
    r"([^\n]+?(?:[.!?。](?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])*(?=\s|$)|(?=\n)|$))(\s*)"
)


def _sentences(answer: str) -> list[tuple[str, str]]:
    """(sentence, the whitespace after it): joined back, they are the answer again."""
    return [(m.group(1), m.group(2)) for m in _SENTENCE.finditer(answer) if m.group(0)]
