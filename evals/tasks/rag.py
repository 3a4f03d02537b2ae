"""The RAG task: questions ({"id", "question", "gold_sources": [...], "answerable": bool})
asked of an index (`index:`, or `corpus:` ingested into `<out>/<spec>-index`); metrics:
citation validity (supported citations over citations plus dropped markers), recall@k of the
gold sources, abstention accuracy. The index's state is part of each answer's cache key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.context import RunContext, backend_for
from evals.data import read_jsonl
from evals.tasks.answers import AnswerTask
from pipelines.errors import UsageError

if TYPE_CHECKING:
    from evals.spec import SystemSpec


class RAGTask(AnswerTask):
    name = "rag"
    metrics = ("citation_validity", "recall@k", "abstention_accuracy")
    spec_fields = frozenset({"index", "corpus"})
    system_fields = frozenset({"k"})

    def load(self) -> list[Any]:
        rows = read_jsonl(self.spec.resolve(self.spec.dataset), "dataset")
        for number, row in rows:
            if not isinstance(row.get("question"), str) or "id" not in row:
                raise UsageError(
                    f'{self.spec.dataset}:{number}: a RAG item needs "id" and "question"',
                    hint='e.g. {"id": "q1", "question": "...", "gold_sources": ["a.md"], '
                    '"answerable": true}',
                )
        return [row for _, row in rows]

    def item_id(self, item: Any) -> str:
        return str(item["id"])

    def question(self, item: Any) -> str:
        return str(item["question"])

    def expected(self, item: Any) -> Any:
        return item.get("gold_sources") or []

    def prompt_names(self, system: SystemSpec) -> list[str]:
        return ["rag/chat/answer", "rag/completion/answer"]

    def open(self) -> None:
        from pipelines.toolkit import Toolkit

        # Opened as `rag ask` opens it (dense when there is an embeddings model), so the
        # eval scores the retrieval users get; a mistyped `index:` is an error, not empty.
        self.toolkit = Toolkit(self.settings)
        spec = self.spec
        if spec.index is not None:
            self.index = self.toolkit.index(spec.resolve(spec.index))
            return
        if spec.corpus is None:
            raise UsageError(
                "a rag spec needs `index:` or `corpus:`", hint="corpus: path/to/documents/"
            )
        self.index = self.toolkit.index_for_ingest(self.out / f"{spec.name}-index")
        self.index.ingest([spec.resolve(spec.corpus)])

    def close(self) -> None:
        self.toolkit.close()

    def cache_parts(self, system: SystemSpec, item: Any) -> dict[str, Any]:
        index = self.index  # dense or not retrieves differently: both are in the key
        return {"task_prompt": None,
                "index": (str(index.path), index.generation(), index.embed_model)}  # fmt: skip

    def answer(self, ctx: RunContext, system: SystemSpec, item: Any) -> dict[str, Any]:
        backend, _ = backend_for(ctx, system)
        rag = self.toolkit.rag(k=system.k, index=self.index, backend=backend)
        answer = rag.invoke(item["question"])
        gold = set(item.get("gold_sources") or [])
        got = {Path(r.source).name for r in answer.retrieved}
        recall = 100.0 * len({Path(g).name for g in gold} & got) / len(gold) if gold else 100.0
        checked = len(answer.citations) + answer.dropped_markers
        supported = sum(c.supported for c in answer.citations)
        validity = 100.0 * supported / checked if checked else 100.0
        should_abstain = not item.get("answerable", True)
        return {
            "output": answer.answer,
            "citations": [c.model_dump() for c in answer.citations],
            "retrieved": [r.model_dump() for r in answer.retrieved],
            "metrics": {
                "citation_validity": validity,
                "recall@k": recall,
                "abstention_accuracy": 100.0 * (answer.abstained == should_abstain),
            },
        }
