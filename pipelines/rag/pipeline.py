"""RAG: answers from the user's documents with citations checked against the sources.

    rag = RAG(model=backend.chat, index=Index(path), k=5)
    answer = rag.invoke("처용가는 누가 지었나요?")
    answer.answer, answer.citations, answer.retrieved

When nothing relevant is retrieved, the answer says the sources do not cover it, with no
citations and without calling the model.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseLLM
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backends.describe import describe_model
from pipelines.errors import UsageError
from pipelines.inputs import question_text
from pipelines.rag.citations import Citation, Passage, check
from pipelines.rag.index import Hit, Index
from pipelines.rag.retriever import IndexRetriever
from prompts import load_prompt

ABSTAIN = {
    "en": "The sources do not cover this.",
    "ko": "제공된 자료에는 이에 대한 내용이 없습니다.",
}
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


class Retrieved(BaseModel):
    n: int
    source: str
    chunk_id: str
    score: float
    start: int
    end: int
    page: int | None = None


class RAGAnswer(BaseModel):
    question: str
    answer: str
    abstained: bool
    citations: list[Citation] = Field(default_factory=list)
    retrieved: list[Retrieved] = Field(default_factory=list)
    dropped_markers: int = 0  # [n] markers that pointed at no retrieved source
    unsupported: list[str] = Field(default_factory=list)  # sentences no source supports
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


class RAG(RunnableSerializable[Any, RAGAnswer]):
    """Retrieve, answer with numbered sources, check every citation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    index: Index
    k: int = Field(default=5, ge=1, le=50)
    backend: str | None = None

    @property
    def retriever(self) -> IndexRetriever:
        return IndexRetriever(index=self.index, k=self.k)

    @property
    def form(self) -> str:
        return "completion" if isinstance(self.model, BaseLLM) else "chat"

    def prepare(
        self, question: str
    ) -> tuple[list[tuple[Hit, float]], list[Passage], PromptValue | None]:
        """Retrieval (hits with scores), the numbered passages, and the prompt (None when
        nothing relevant was found)."""
        if not question.strip():
            raise UsageError("the question is empty", hint="ask something about your documents")
        scored = self.retriever.hits(question)
        hits = [hit for hit, _ in scored]
        passages = [
            Passage(n, h.chunk.source, h.chunk.chunk_id, h.chunk.start, h.chunk.end, h.chunk.page)
            for n, h in enumerate(hits, 1)
        ]
        if not hits:
            return scored, passages, None
        fence = "~~~" + secrets.token_hex(6)  # unguessable: a document cannot close it
        sources = [
            {"n": p.n, "source": p.source, "page": p.page, "text": h.chunk.text.replace(fence, "")}
            for p, h in zip(passages, hits, strict=True)
        ]
        prompt = load_prompt(f"rag/{self.form}/answer").invoke(
            {"question": question, "sources": sources, "fence": fence,
             "abstain": ABSTAIN[language_of(question)]}
        )  # fmt: skip
        return scored, passages, prompt

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> RAGAnswer:
        def run(value: Any) -> RAGAnswer:
            *_, last = self._run(_question(value), stream=False)
            assert isinstance(last, RAGAnswer)
            return last

        return self._call_with_config(run, input, config, run_type="chain")

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Yields the answer's text as it is generated, then the checked `RAGAnswer`."""
        yield from self._run(_question(input), stream=True)

    def _run(self, question: str, *, stream: bool) -> Iterator[Any]:
        scored, passages, prompt = self.prepare(question)
        backend, model_name = describe_model(self.model)
        backend = self.backend or backend
        retrieved = [
            Retrieved(n=p.n, source=p.source, chunk_id=p.chunk_id, score=round(s, 6), start=p.start,
                      end=p.end, page=p.page)
            for p, (_, s) in zip(passages, scored, strict=True)
        ]  # fmt: skip
        abstain_text = ABSTAIN[language_of(question)]
        if prompt is None:
            yield abstain_text
            yield RAGAnswer(question=question, answer=abstain_text, abstained=True, retrieved=[],
                            backend=backend, model=model_name)  # fmt: skip
            return
        parts: list[str] = []
        model_input: Any = prompt.to_string() if self.form == "completion" else prompt
        if stream:
            for chunk in self.model.stream(model_input):
                text = chunk.text if isinstance(chunk, BaseMessage) else str(chunk)
                parts.append(text)
                yield text
        else:
            out = self.model.invoke(model_input)
            parts.append(out.text if isinstance(out, BaseMessage) else str(out))
        raw = "".join(parts).strip()
        checked = check(raw, passages, self.index.document_text)
        abstained = not checked.citations and (
            abstain_text.rstrip(".") in raw or any(a.rstrip(".") in raw for a in ABSTAIN.values())
        )
        yield RAGAnswer(
            question=question,
            answer=abstain_text if abstained else checked.answer,
            abstained=abstained,
            citations=[] if abstained else checked.citations,
            retrieved=retrieved,
            dropped_markers=checked.dropped_markers,
            unsupported=[] if abstained else checked.unsupported,
            backend=backend,
            model=model_name,
        )


def _question(value: Any) -> str:
    return question_text(value, "RAG", 'rag.invoke("What does the report say about ...?")')
