"""The translate task (hyangga → modern Korean, or any source → references), and the dialog
task, which is the same with a different dataset: the next assistant turn given the turns
before it (`meta.history`), scored against the real one.

Each item's output comes from the cache, or one model call with the system's prompt (few-
shot examples dropped, last first, when they do not fit the window); outputs made
elsewhere (`outputs:`) are scored as they are. Scores are sacrebleu's, per sentence and per
corpus, with paired bootstrap intervals resampled by group (a poem, a dialog).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evals.cache import cache_key
from evals.context import RunContext, backend_for
from evals.data import Item, load_dialog_items, load_outputs, load_translation
from evals.metrics import Scorer, default_tokenizer
from evals.stats import bootstrap
from evals.tasks.base import Produced, Task, summary_document
from pipelines.budget import Budget, budget_for
from pipelines.errors import BackendError, ContextOverflowError, UsageError
from prompts import load_prompt, show

if TYPE_CHECKING:
    from evals.spec import SystemSpec


def few_shot_examples(items: list[Item], index: int, shots: int) -> list[dict[str, Any]]:
    """Leave-one-out: the `shots` items after this one (wrapping around), never itself."""
    others = [items[(index + 1 + j) % len(items)] for j in range(len(items) - 1)]
    return [
        {
            "source": o.source,
            "reading": o.meta.get("reading"),
            "target": o.references[0],
            "title": o.meta.get("title"),
        }
        for o in others[:shots]
    ]


def render(
    system: SystemSpec, items: list[Item], index: int, budget: Budget | None = None
) -> tuple[Any, int]:
    """The prompt for item `index` and how many few-shot examples it holds: examples that do
    not fit the model's context window (`budget`) are dropped, last first."""
    assert system.prompt is not None
    template = load_prompt(system.prompt)
    known = set(template.input_variables) | set(template.optional_variables)
    examples = few_shot_examples(items, index, system.shots)
    while True:
        variables = {"source": items[index].source, "examples": examples, "meta": items[index].meta}
        prompt = template.invoke({k: v for k, v in variables.items() if k in known})
        if budget is None or not examples or budget.fits(prompt):
            return prompt, len(examples)
        examples = examples[:-1]


def truncation_note(metadata: dict[str, Any]) -> str | None:
    """What a backend said it cut (`response_metadata["prompt_truncated"]`), in a line."""
    cut = metadata.get("prompt_truncated")
    if not cut:
        return None
    return (
        f"the server read {cut['evaluated']} of about {cut['sent_estimate']} prompt tokens "
        f"(num_ctx {cut['num_ctx']}): raise num_ctx or shorten the input"
    )


def _output(text: str, cached: bool, shots: int | None = None, truncated: str | None = None,
            error: str | None = None, failed: bool = False,
            given: bool = False) -> Produced:  # fmt: skip
    extra = {"shots": shots, "prompt_truncated": truncated, "error": error}
    record = {"output": text, **{k: v for k, v in extra.items() if v is not None}}
    return Produced(record, cached, error=error, failed=failed, given=given)


class Translate(Task):
    name = "translate"
    metrics = ("chrf", "chrf++", "bleu", "ter")
    spec_fields = frozenset({"tokenize", "group_by"})
    system_fields = frozenset({"prompt", "shots", "outputs"})
    needs_prompt = True
    corpus_scorer = Scorer

    def load(self) -> list[Any]:
        self.items = load_translation(self.spec.resolve(self.spec.dataset))
        self._setup()
        return self.items

    def _setup(self) -> None:
        tokenize = self.spec.tokenize or default_tokenizer([i.references for i in self.items])
        self.scorer = Scorer(self.spec.metrics or [], tokenize)
        self.stats: dict[tuple[str, str], dict[str, Any]] = {}  # per item, reused in summary
        self.positions = {item.id: n for n, item in enumerate(self.items)}

    def item_id(self, item: Any) -> str:
        return str(item.id)

    def prepared(self, system: SystemSpec, items: list[Any]) -> list[tuple[Any, Produced]] | None:
        if not system.outputs:
            return None
        external = load_outputs(self.spec.resolve(system.outputs))
        missing = [i.id for i in self.items if i.id not in external]
        if missing:
            raise UsageError(
                f"{system.outputs}: no output for {len(missing)} item(s): "
                + ", ".join(missing[:5]),
                hint='add {"id": ..., "output": ...} lines for them',
            )
        return [(item, _output(external[item.id], cached=False, given=True)) for item in items]

    def produce(self, ctx: RunContext, system: SystemSpec, item: Any) -> Produced:
        """From the cache, or one model call. Safe in several threads (the backend was made
        beforehand; the cache keeps a connection per thread)."""
        index = self.positions[item.id]
        backend, settings = backend_for(ctx, system)
        budget = budget_for(backend.chat)
        prompt, shots = render(system, self.items, index, budget)
        try:
            budget.require(prompt, f"item {item.id}'s prompt")
        except ContextOverflowError as exc:
            return _output("", cached=False, error=exc.message)
        used = shots if system.shots else None
        params = {
            k: getattr(settings, k)
            for k in ("temperature", "seed", "max_tokens", "num_ctx", "stop")
        }
        key = cache_key(backend=backend.name, model=backend.model, prompt=show(prompt),
                        params=params, input=item.source)  # fmt: skip
        hit = ctx.cache.entry(key)
        if hit is not None:
            return _output(hit[0], True, used, truncated=hit[1].get("prompt_truncated"))
        try:
            message = backend.chat.invoke(prompt)
        except BackendError as exc:  # the backend already tried again where that could help
            return _output("", cached=False, error=exc.message, failed=True)
        output = (message.text if hasattr(message, "text") else str(message)).strip()
        note = truncation_note(getattr(message, "response_metadata", None) or {})
        ctx.cache.put(key, output, system=system.name, item=item.id, model=backend.model,
                      prompt_truncated=note)  # fmt: skip
        return _output(output, False, used, truncated=note)

    def row(self, system: SystemSpec, item: Any, produced: Produced) -> dict[str, Any]:
        record = dict(produced.record)
        output = record.pop("output")
        self.stats[(system.name, item.id)] = self.scorer.item(output, item.references)
        return {
            "system": system.name,
            "id": item.id,
            "output": output,
            "references": item.references,
            "metrics": self.scorer.sentence(self.stats[(system.name, item.id)]),
            "cached": produced.cached,
            **record,
        }

    def summarise(
        self,
        items: list[Any],
        rows: list[dict[str, Any]],
        calls: dict[str, dict[str, int]],
        run_dir: Path,
        resumed: bool,
    ) -> dict[str, Any]:
        spec, scorer, stats = self.spec, self.scorer, self.stats
        for r in rows:
            key = (r["system"], r["id"])
            if key not in stats:  # lines written before a resume
                item = self.items[self.positions[r["id"]]]
                stats[key] = scorer.item(r["output"], item.references)
        group_key = spec.group_by or next(
            (k for k in ("poem", "group") if all(k in i.meta for i in items)), None
        )
        groups = [str(i.meta.get(group_key, i.id)) if group_key else i.id for i in items]
        per_system = {s.name: [stats[(s.name, i.id)] for i in items] for s in spec.systems}
        systems: dict[str, Any] = {}
        pairs: dict[str, Any] = {}
        for system in spec.systems:
            systems[system.name] = {
                "metrics": scorer.corpus(per_system[system.name]),
                **calls[system.name],
                "outputs_from": str(system.outputs) if system.outputs else "model",
            }
        for metric in spec.metrics or []:
            arrays = {n: np.array([r[metric] for r in rows_]) for n, rows_ in per_system.items()}
            boot = bootstrap(scorer, metric, arrays, groups, spec.bootstrap, spec.seed)
            for name, info in boot["systems"].items():
                systems[name]["metrics"][metric]["ci"] = info["ci"]
            pairs[metric] = boot["pairs"]
        return summary_document(spec, run_dir, len(items), systems, pairs, resumed,
                                tokenize=scorer.tokenize, group_by=group_key)  # fmt: skip

    def report_items(self) -> tuple[list[Any], dict[tuple[str, str], Any] | None]:
        return self.items, self.stats


class Dialog(Translate):
    """The next assistant turn of each dialog, given the turns before it."""

    name = "dialog"
    default_prompt = "dialog/next_turn"  # the one prompt this task's items are written for

    def load(self) -> list[Any]:
        self.items = load_dialog_items(self.spec.resolve(self.spec.dataset))
        self._setup()
        return self.items
