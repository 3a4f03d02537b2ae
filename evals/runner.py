"""Running a spec: outputs (cached, resumable), scores, intervals, history, reports.

A run lives in `<out>/<run-id>/`: `run.json` (what is being run), `results.jsonl` (one line
per system and item, appended as each finishes), then `summary.json`, `report.md` and
`report.html` when it is done. Running an unchanged spec again after a crash or a kill
resumes the unfinished run: finished lines are kept, a torn last line is cut, and the
rest is produced (from the cache when the model had already answered).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from evals.cache import OutputCache, cache_key
from evals.data import Item, load_dialog_items, load_outputs, load_translation
from evals.metrics import Scorer, default_tokenizer
from evals.runs import Failures, append_line, finish_run, open_run, read_results
from evals.spec import EvalSpec, SystemSpec, check_inputs
from evals.stats import bootstrap
from pipelines.budget import Budget, budget_for
from pipelines.errors import (
    BackendError,
    ContextOverflowError,
    PromptTruncatedWarning,
    UsageError,
    first_problem,
)
from pipelines.pool import bounded, default_concurrency
from pipelines.settings import Settings, model_field
from prompts import load_prompt, show

ModelFactory = Callable[[Settings], Any]  # settings -> Backend (name, model, chat)


@dataclass
class Progress:
    total: int
    done: int = 0
    model_calls: int = 0
    cached: int = 0
    resumed: int = 0  # taken from the interrupted run this one resumes
    in_flight: int = 0  # model calls running now
    on_step: Callable[[Progress], None] | None = None

    def step(self) -> None:
        self.done += 1
        self.show()

    def flying(self, n: int) -> None:
        if n != self.in_flight:
            self.in_flight = n
            self.show()

    def show(self) -> None:
        if self.on_step:
            self.on_step(self)


def concurrency_for(ctx: RunContext, system: SystemSpec, backend: Any) -> int:
    """Calls at once: the system's, else the spec's, else the setting, else per backend."""
    chosen = system.concurrency or ctx.spec.concurrency or ctx.settings.concurrency
    return chosen or default_concurrency(backend.name)


@dataclass
class RunContext:
    spec: EvalSpec
    settings: Settings
    cache: OutputCache
    backend_factory: ModelFactory
    backends: dict[str, Any] = field(default_factory=dict)


def backend_for(ctx: RunContext, system: SystemSpec) -> Any:
    overrides: dict[str, Any] = {k: v for k, v in system.params.items() if v is not None}
    if system.backend:
        overrides["backend"] = system.backend
    if system.model:
        backend = system.backend or ctx.settings.backend
        overrides["gguf" if system.backend == "embedded" else model_field(backend)] = system.model
    settings = _with(ctx.settings, overrides, system.name) if overrides else ctx.settings
    key = settings.model_dump_json()
    if key not in ctx.backends:
        ctx.backends[key] = (ctx.backend_factory(settings), settings)
    return ctx.backends[key]


def _with(settings: Settings, overrides: dict[str, Any], system: str) -> Settings:
    try:
        return Settings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        where, message, _ = first_problem(exc)
        raise UsageError(
            f"system {system}: params.{where}: {message}",
            hint="params take settings fields: temperature, seed, max_tokens, num_ctx, stop",
        ) from None


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


@dataclass
class Output:
    text: str
    cached: bool
    shots: int | None = None  # few-shot examples the prompt held (when the system asks for any)
    truncated: str | None = None  # the server read only part of the prompt
    error: str | None = None  # the item could not run: its prompt cannot fit the window
    failed: bool = False  # the model call failed (after retries): asked again on resume

    def fields(self) -> dict[str, Any]:
        """What a results.jsonl row records beyond the output."""
        extra = {"shots": self.shots, "prompt_truncated": self.truncated, "error": self.error}
        return {k: v for k, v in extra.items() if v is not None}


def truncation_note(metadata: dict[str, Any]) -> str | None:
    """What a backend said it cut (`response_metadata["prompt_truncated"]`), in a line."""
    cut = metadata.get("prompt_truncated")
    if not cut:
        return None
    return (
        f"the server read {cut['evaluated']} of about {cut['sent_estimate']} prompt tokens "
        f"(num_ctx {cut['num_ctx']}): raise num_ctx or shorten the input"
    )


@contextmanager
def truncation_recorded() -> Iterator[None]:
    """During a run each cut prompt is recorded with its item, not printed as it happens."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        yield


def generate(ctx: RunContext, system: SystemSpec, items: list[Item], index: int) -> Output:
    """One item's output: from the cache, or one model call. Safe to run in several threads
    (the backend was made beforehand; the cache keeps a connection per thread)."""
    backend, settings = backend_for(ctx, system)
    budget = budget_for(backend.chat)
    prompt, shots = render(system, items, index, budget)
    try:
        budget.require(prompt, f"item {items[index].id}'s prompt")
    except ContextOverflowError as exc:
        return Output("", cached=False, error=exc.message)
    used = shots if system.shots else None
    params = {
        k: getattr(settings, k) for k in ("temperature", "seed", "max_tokens", "num_ctx", "stop")
    }
    key = cache_key(
        backend=backend.name,
        model=backend.model,
        prompt=show(prompt),
        params=params,
        input=items[index].source,
    )
    hit = ctx.cache.entry(key)
    if hit is not None:
        return Output(hit[0], True, used, truncated=hit[1].get("prompt_truncated"))
    try:
        message = backend.chat.invoke(prompt)
    except BackendError as exc:  # the backend already tried again where that could help
        return Output("", cached=False, error=exc.message, failed=True)
    output = (message.text if hasattr(message, "text") else str(message)).strip()
    note = truncation_note(getattr(message, "response_metadata", None) or {})
    ctx.cache.put(key, output, system=system.name, item=items[index].id, model=backend.model,
                  prompt_truncated=note)  # fmt: skip
    return Output(output, False, used, truncated=note)


# -- a whole run ------------------------------------------------------------------------------


@truncation_recorded()
def run_spec(
    spec: EvalSpec,
    out: Path,
    *,
    settings: Settings,
    backend_factory: ModelFactory,
    on_step: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    check_inputs(spec)  # before a run folder is made or a model loads
    if spec.task not in ("translate", "dialog"):
        from evals.tasks import run_task  # PAL and RAG tasks

        return run_task(
            spec, out, settings=settings, backend_factory=backend_factory, on_step=on_step
        )
    path = spec.resolve(spec.dataset)
    items = load_dialog_items(path) if spec.task == "dialog" else load_translation(path)
    run_dir, resumed = open_run(out, spec)
    results_path = run_dir / "results.jsonl"
    done = {(r["system"], r["id"]): r for r in read_results(results_path)}
    tokenize = spec.tokenize or default_tokenizer([i.references for i in items])
    ctx = RunContext(
        spec, settings, OutputCache(settings.cache_dir / "eval-outputs.sqlite"), backend_factory
    )
    progress = Progress(total=len(items) * len(spec.systems), on_step=on_step)
    calls: dict[str, dict[str, int]] = {
        s.name: {"model_calls": 0, "cached": 0, "resumed": 0} for s in spec.systems
    }
    scorer = Scorer(spec.metrics or [], tokenize)
    stats: dict[tuple[str, str], dict[str, Any]] = {}  # per-item statistics, reused below
    failures = Failures(run_dir)
    for system in spec.systems:
        external = load_outputs(spec.resolve(system.outputs)) if system.outputs else None
        if external is not None:
            missing = [i.id for i in items if i.id not in external]
            if missing:
                raise UsageError(
                    f"{system.outputs}: no output for {len(missing)} item(s): "
                    + ", ".join(missing[:5]),
                    hint='add {"id": ..., "output": ...} lines for them',
                )
        todo = []
        for index, item in enumerate(items):
            if (system.name, item.id) in done:
                calls[system.name]["resumed"] += 1
                progress.resumed += 1
                progress.step()
            else:
                todo.append(index)
        if external is not None:
            produced: Iterable[tuple[int, Output]] = (
                (i, Output(external[items[i].id], cached=False)) for i in todo
            )
        else:
            backend, _ = backend_for(ctx, system)  # made here, shared by the calls
            produced = bounded(
                partial(generate, ctx, system, items),
                todo,
                concurrency_for(ctx, system, backend),
                on_flight=progress.flying,
            )
        for index, made in produced:
            item = items[index]
            if made.failed:
                progress.step()
                failures.record(system.name, item.id, made.error or "")
                continue
            failures.succeeded()
            output, cached = made.text, made.cached
            if made.error is None:
                kind = "cached" if cached else "model_calls"
                calls[system.name][kind] += 1
                setattr(progress, kind, getattr(progress, kind) + 1)
            stats[(system.name, item.id)] = scorer.item(output, item.references)
            row = {
                "system": system.name,
                "id": item.id,
                "output": output,
                "references": item.references,
                "metrics": scorer.sentence(stats[(system.name, item.id)]),
                "cached": cached,
                **made.fields(),
            }
            append_line(results_path, row)
            done[(system.name, item.id)] = row
            progress.step()
    failures.check(len(items) * len(spec.systems))
    rows = read_results(results_path)
    summary = summarise(spec, items, rows, scorer, stats, calls, run_dir, resumed)
    return finish_run(out, run_dir, spec, summary, rows, items, stats)


def summary_document(
    spec: EvalSpec,
    run_dir: Path,
    items: int,
    systems: dict[str, Any],
    pairs: dict[str, Any],
    resumed: bool,
    *,
    tokenize: str | None = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """`summary.json`, for every task."""
    return {
        "run_id": run_dir.name,
        "spec": spec.name,
        "task": spec.task,
        "fingerprint": spec.fingerprint(),
        "dataset": str(spec.dataset),
        "items": items,
        "tokenize": tokenize,
        "group_by": group_by,
        "bootstrap": {"resamples": spec.bootstrap, "seed": spec.seed},
        "finished": time.time(),
        "resumed": resumed,
        "systems": systems,
        "pairs": pairs,
    }


def summarise(
    spec: EvalSpec,
    items: list[Item],
    rows: list[dict[str, Any]],
    scorer: Scorer,
    stats: dict[tuple[str, str], dict[str, Any]],
    calls: dict[str, dict[str, int]],
    run_dir: Path,
    resumed: bool,
) -> dict[str, Any]:
    outputs = {(r["system"], r["id"]): r["output"] for r in rows}
    for key, output in outputs.items():
        if key not in stats:  # lines written before a resume
            item = next(i for i in items if i.id == key[1])
            stats[key] = scorer.item(output, item.references)
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
        arrays = {name: np.array([r[metric] for r in rows_]) for name, rows_ in per_system.items()}
        boot = bootstrap(scorer, metric, arrays, groups, spec.bootstrap, spec.seed)
        for name, info in boot["systems"].items():
            systems[name]["metrics"][metric]["ci"] = info["ci"]
        pairs[metric] = boot["pairs"]
    return summary_document(
        spec,
        run_dir,
        len(items),
        systems,
        pairs,
        resumed,
        tokenize=scorer.tokenize,
        group_by=group_key,
    )
