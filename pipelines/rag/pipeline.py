"""RAG: answers from the user's documents with citations checked against the sources.

    rag = RAG(model=backend.chat, index=Index(path), k=5)
    answer = rag.invoke("처용가는 누가 지었나요?")
    answer.answer, answer.citations, answer.retrieved

When nothing relevant is retrieved, the answer says the sources do not cover it, with no
citations and without calling the model.

Passages go into the prompt best-first while they fit the model's context window (what the
question, the instructions and the answer's `max_tokens` leave; counted by the model's own
tokenizer, see pipelines/budget.py). The first one that does not fit whole is cut at a
sentence end, and the rest are left out: the answer says how many (`passages_dropped`,
`passages_trimmed`), and a cut passage's offsets end where its text was cut, so citations
still quote exact slices of the source.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseLLM
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backends.describe import describe_model
from pipelines.budget import Budget, budget_for
from pipelines.errors import ContextOverflowError, UsageError
from pipelines.inputs import question_text
from pipelines.rag.chunking import sentence_spans
from pipelines.rag.citations import Citation, Passage, check
from pipelines.rag.index import Chunk, Hit, Index
from pipelines.rag.retriever import IndexRetriever
from pipelines.streaming import StreamThenResult, model_text
from prompts import load_prompt

ABSTAIN = {
    "en": "The sources do not cover this.",
    "ko": "제공된 자료에는 이에 대한 내용이 없습니다.",
}
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Retrieved(BaseModel):
    n: int | None  # its number in the prompt; None when it did not fit
    source: str
    chunk_id: str
    score: float
    start: int
    end: int  # where the text in the prompt ends (before the chunk's end when trimmed)
    page: int | None = None
    in_prompt: bool = True
    trimmed: bool = False


class RAGAnswer(BaseModel):
    question: str
    answer: str
    abstained: bool
    citations: list[Citation] = Field(default_factory=list)
    retrieved: list[Retrieved] = Field(default_factory=list)
    dropped_markers: int = 0  # [n] markers that pointed at no retrieved source
    unsupported: list[str] = Field(default_factory=list)  # sentences no source supports
    passages_dropped: int = 0  # retrieved, but left out: the context window was full
    passages_trimmed: int = 0  # cut at a sentence end to fit
    backend: str
    model: str

    def to_json(self) -> dict[str, Any]:
        """The documented `rag ask --json` document (plus the checking details)."""
        doc = self.model_dump(exclude={"question"})
        for r in doc["retrieved"]:
            r.pop("n")
        return doc


def language_of(text: str) -> str:
    return "ko" if _HANGUL.search(text) else "en"


@dataclass
class Prepared:
    """What goes to the model for a question: numbered passages and the prompt (None when
    nothing relevant was retrieved), and every retrieved chunk with what became of it."""

    passages: list[Passage]
    prompt: PromptValue | None
    retrieved: list[Retrieved] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return sum(not r.in_prompt for r in self.retrieved)

    @property
    def trimmed(self) -> int:
        return sum(r.trimmed for r in self.retrieved)


class RAG(StreamThenResult, RunnableSerializable[Any, RAGAnswer]):
    """Retrieve, answer with numbered sources, check every citation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    index: Index
    k: int = Field(default=5, ge=1, le=50)
    backend: str | None = None
    budget: Budget | None = None  # default: the model's own (budget_for(model))

    @property
    def retriever(self) -> IndexRetriever:
        return IndexRetriever(index=self.index, k=self.k)

    @property
    def form(self) -> str:
        return "completion" if isinstance(self.model, BaseLLM) else "chat"

    def prepare(self, question: str) -> Prepared:
        """Retrieve, then pack the passages that fit into the prompt, best first."""
        if not question.strip():
            raise UsageError("the question is empty", hint="ask something about your documents")
        scored = self.retriever.hits(question)
        if not scored:
            return Prepared(passages=[], prompt=None)
        fence = "~~~" + secrets.token_hex(6)  # unguessable: a document cannot close it
        template = load_prompt(f"rag/{self.form}/answer")
        abstain = ABSTAIN[language_of(question)]

        def render(chosen: list[tuple[Passage, str]]) -> PromptValue:
            sources = [
                # The file name labels it for the model: short, and the same from any cwd.
                {
                    "n": p.n,
                    "source": Path(p.source).name,
                    "page": p.page,
                    "text": text.replace(fence, ""),
                }
                for p, text in chosen
            ]
            return template.invoke(
                {"question": question, "sources": sources, "fence": fence, "abstain": abstain}
            )

        budget = self.budget or budget_for(self.model)
        budget.require(render([]), "the question with the RAG instructions")
        chosen, retrieved = _pack(scored, lambda c: budget.fits(render(c)))
        if not chosen:
            raise ContextOverflowError(
                "no retrieved passage fits in the context window beside the question",
                hint="raise --num-ctx, lower --max-tokens, or ask a shorter question",
                window=budget.window or 0,
            )
        return Prepared([p for p, _ in chosen], render(chosen), retrieved)

    def _parse(self, value: Any) -> Any:
        return _question(value)

    def _run(self, question: str, *, stream: bool) -> Iterator[Any]:
        prepared = self.prepare(question)
        prompt, passages = prepared.prompt, prepared.passages
        backend, model_name = describe_model(self.model)
        backend = self.backend or backend
        abstain_text = ABSTAIN[language_of(question)]
        if prompt is None:
            yield abstain_text
            yield RAGAnswer(question=question, answer=abstain_text, abstained=True, retrieved=[],
                            backend=backend, model=model_name)  # fmt: skip
            return
        parts: list[str] = []
        for text in model_text(self.model, prompt, stream=stream):
            parts.append(text)
            if stream:
                yield text
        raw = "".join(parts).strip()
        checked = check(raw, passages, self.index.document_text, question)
        for c in checked.citations:
            if c.page is not None:  # the quote's own page, not its chunk's first
                c.page = self.index.page_at(c.source, c.start) or c.page
        abstained = not checked.citations and (
            abstain_text.rstrip(".") in raw or any(a.rstrip(".") in raw for a in ABSTAIN.values())
        )
        yield RAGAnswer(
            question=question,
            answer=abstain_text if abstained else checked.answer,
            abstained=abstained,
            citations=[] if abstained else checked.citations,
            retrieved=prepared.retrieved,
            dropped_markers=checked.dropped_markers,
            unsupported=[] if abstained else checked.unsupported,
            passages_dropped=prepared.dropped,
            passages_trimmed=prepared.trimmed,
            backend=backend,
            model=model_name,
        )


Packed = list[tuple[Passage, str]]  # numbered passages and the text the prompt shows


def _pack(
    scored: list[tuple[Hit, float]], fits: Callable[[Packed], bool]
) -> tuple[Packed, list[Retrieved]]:
    """Passages best-first while they fit; the first that does not fit whole is cut at a
    sentence end (or left out), and once one is cut the rest are left out."""
    chosen: Packed = []
    retrieved: list[Retrieved] = []
    full = False
    for hit, score in scored:
        c, n = hit.chunk, len(chosen) + 1

        def numbered(text: str, c: Chunk = c, n: int = n) -> tuple[Passage, str]:
            end = c.start + len(text)
            return Passage(n, c.source, c.chunk_id, c.start, end, c.page), text

        fitted = None if full else _fit(c.text, lambda text: fits([*chosen, numbered(text)]))
        in_prompt = fitted is not None
        end = c.start + len(fitted) if fitted is not None else c.end
        if fitted is not None:
            chosen.append(numbered(fitted))
            full = end < c.end
        retrieved.append(
            Retrieved(
                n=n if in_prompt else None, source=c.source, chunk_id=c.chunk_id,
                score=round(score, 6), start=c.start, end=end, page=c.page,
                in_prompt=in_prompt, trimmed=end < c.end,
            )
        )  # fmt: skip
    return chosen, retrieved


def _fit(text: str, fits: Any) -> str | None:
    """`text` if it fits; else its longest run of whole sentences that fits; else None."""
    if fits(text):
        return text
    ends = [end for _, end in sentence_spans(text)][:-1]  # the last one is the whole text
    low, high, best = 0, len(ends) - 1, None
    while low <= high:  # fitting is monotone in length: binary search the sentence ends
        mid = (low + high) // 2
        if fits(text[: ends[mid]]):
            best, low = ends[mid], mid + 1
        else:
            high = mid - 1
    return None if best is None else text[:best]


def _question(value: Any) -> str:
    return question_text(value, "RAG", 'rag.invoke("What does the report say about ...?")')
