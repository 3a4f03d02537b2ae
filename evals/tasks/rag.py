"""The RAG task: questions ({"id", "question", "gold_sources": [...], "answerable": bool,
"answers": [...] or "reference": "..."}) asked of an index (`index:`, or `corpus:` ingested
into `<out>/<spec>-index`); metrics: answer correctness against the references
(evals/correctness.py), citation validity (supported citations over citations plus dropped
markers), recall@k of the gold sources, abstention accuracy. The index's state is part of
each answer's cache key; answer correctness is scored from the cached answer, so changing
a reference needs no model call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.context import RunContext, backend_for
from evals.correctness import METRIC, score
from evals.data import read_jsonl
from evals.judge import JUDGED, PROMPT, judge_backend, verdict
from evals.tasks.answers import AnswerTask
from evals.tasks.base import Produced
from pipelines.errors import UsageError

if TYPE_CHECKING:
    from evals.spec import EvalSpec, SystemSpec


class RAGTask(AnswerTask):
    name = "rag"
    metrics = (METRIC, "citation_validity", "recall@k", "abstention_accuracy", JUDGED)
    spec_fields = frozenset({"index", "corpus", "judge"})
    system_fields = frozenset({"k"})

    @classmethod
    def default_metrics(cls, spec: EvalSpec) -> list[str]:
        """The judge's verdict only when the spec names a judge."""
        return [m for m in cls.metrics if m != JUDGED or spec.judge is not None]

    def load(self) -> list[Any]:
        if JUDGED in (self.spec.metrics or []) and self.spec.judge is None:
            raise UsageError(
                f"{JUDGED} needs a judge model: `judge: {{backend: ..., model: ...}}`",
                hint=f"or leave {JUDGED} out of `metrics:`",
            )
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

    def row(self, system: SystemSpec, item: Any, produced: Produced) -> dict[str, Any]:
        row = super().row(system, item, produced)
        abstained = bool(produced.record.get("abstained", _abstained(item, row)))
        row["metrics"] = {METRIC: score(item, row["output"], abstained), **row["metrics"]}
        return row

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
        parts: dict[str, Any] = {"task_prompt": None,
                "index": (str(index.path), index.generation(), index.embed_model)}  # fmt: skip
        if self.spec.judge is not None:  # its verdict is in the record (no judge: keys as before)
            parts["judge"] = self.spec.judge.model_dump(mode="json")
        return parts

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
            "abstained": answer.abstained,
            "citations": [c.model_dump() for c in answer.citations],
            "retrieved": [r.model_dump() for r in answer.retrieved],
            "metrics": {
                "citation_validity": validity,
                "recall@k": recall,
                "abstention_accuracy": 100.0 * (answer.abstained == should_abstain),
                **self._judged(ctx, item, answer),
            },
        }

    def _judged(self, ctx: RunContext, item: Any, answer: Any) -> dict[str, float | None]:
        if self.spec.judge is None:
            return {}
        if not hasattr(self, "judge_ran"):  # what judged, for the run's record
            from evals.identity import prompt_identity

            backend, _ = judge_backend(ctx, self.spec.judge)
            self.judge_ran = {"backend": backend.name, "model": backend.model,
                              "prompt": prompt_identity([PROMPT])}  # fmt: skip
        return {JUDGED: verdict(ctx, self.spec.judge, item, answer)}

    def summarise(
        self,
        items: list[Any],
        rows: list[dict[str, Any]],
        calls: dict[str, dict[str, int]],
        run_dir: Path,
        resumed: bool,
    ) -> dict[str, Any]:
        summary = super().summarise(items, rows, calls, run_dir, resumed)
        if self.spec.judge is not None:
            judge = self.spec.judge
            summary["judge"] = getattr(self, "judge_ran", None) or {
                "backend": judge.backend, "model": judge.model, "prompt": None,
            }  # fmt: skip
        return summary


def _abstained(item: dict[str, Any], row: dict[str, Any]) -> bool:
    """Whether an answer cached before `abstained` was recorded abstained: its abstention
    was right exactly when it matched the item's being unanswerable."""
    right = row["metrics"].get("abstention_accuracy") == 100.0
    return right == (not item.get("answerable", True))
