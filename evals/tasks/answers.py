"""What the PAL and RAG tasks share: each item's whole answer is one cached record with its
own per-item metrics, scored over the run as means with paired bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.cache import cache_key
from evals.context import RunContext, backend_for
from evals.stats import bootstrap_means
from evals.tasks.base import Produced, Task, summary_document
from pipelines.errors import BackendError

if TYPE_CHECKING:
    from evals.spec import SystemSpec


class AnswerTask(Task):
    """A task whose system answers a question; subclasses say how, and what it scores."""

    def question(self, item: Any) -> str:
        raise NotImplementedError

    def expected(self, item: Any) -> Any:
        raise NotImplementedError

    def cache_parts(self, system: SystemSpec, item: Any) -> dict[str, Any]:
        """What, besides backend, model, parameters and question, changes the answer."""
        return {}

    def answer(self, ctx: RunContext, system: SystemSpec, item: Any) -> dict[str, Any]:
        """The record: output, metrics and details. May raise BackendError."""
        raise NotImplementedError

    def produce(self, ctx: RunContext, system: SystemSpec, item: Any) -> Produced:
        """From the cache or the pipeline. Runs in the eval's worker threads."""
        backend, sys_settings = backend_for(ctx, system)
        params = {
            k: getattr(sys_settings, k) for k in ("temperature", "seed", "max_tokens", "num_ctx")
        }
        key = cache_key(
            task=self.spec.task, backend=backend.name, model=backend.model,
            method=system.method, k=system.k, params=params, input=self.question(item),
            **self.cache_parts(system, item),
        )  # fmt: skip
        cached = ctx.cache.get(key)
        if cached is not None:
            return Produced(json.loads(cached), True)
        try:
            record = self.answer(ctx, system, item)
        except BackendError as exc:  # the backend already tried again where that could help
            return Produced({}, False, error=exc.message, failed=True)
        ctx.cache.put(key, json.dumps(record, ensure_ascii=False, default=str),
                      system=system.name, item=self.item_id(item))  # fmt: skip
        return Produced(record, False)

    def row(self, system: SystemSpec, item: Any, produced: Produced) -> dict[str, Any]:
        return {
            "system": system.name, "id": self.item_id(item), "input": self.question(item),
            "expected": self.expected(item), "references": [], **produced.record,
            "cached": produced.cached,
        }  # fmt: skip

    def summarise(
        self,
        items: list[Any],
        rows: list[dict[str, Any]],
        calls: dict[str, dict[str, int]],
        run_dir: Path,
        resumed: bool,
    ) -> dict[str, Any]:
        spec = self.spec
        ids = [self.item_id(i) for i in items]
        values: dict[str, dict[str, list[float]]] = {}
        scored: dict[str, list[str]] = {}  # per metric, the items it scores (None: not one)
        by_id = {(r["system"], r["id"]): r for r in rows}
        for metric in spec.metrics or []:
            scored[metric] = [
                i for i in ids
                if all(by_id[(s.name, i)]["metrics"].get(metric) is not None for s in spec.systems)
            ]  # fmt: skip
            values[metric] = {
                s.name: [float(by_id[(s.name, i)]["metrics"][metric]) for i in scored[metric]]
                for s in spec.systems
            }
        systems: dict[str, Any] = {
            s.name: {"metrics": {}, **calls[s.name], "outputs_from": "model"} for s in spec.systems
        }
        pairs: dict[str, Any] = {}
        for metric, per_system in values.items():
            if not scored[metric]:  # e.g. answer correctness on a dataset without references
                continue
            boot = bootstrap_means(per_system, scored[metric], spec.bootstrap, spec.seed)
            for name, info in boot["systems"].items():
                systems[name]["metrics"][metric] = info
            pairs[metric] = boot["pairs"]
        summary = summary_document(spec, run_dir, len(items), systems, pairs, resumed)
        summary["unscored"] = [m for m in spec.metrics or [] if not scored[m]]
        return summary
