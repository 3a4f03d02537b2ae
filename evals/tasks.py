"""PAL and RAG evals: the same run folder, cache, resume, history and reports as translation.

- `pal`: a PAL dataset ({"id", "question", "answer"}); each system is a method (pal, cot,
  direct) on a backend; the metric is accuracy, answers compared as numbers.
- `rag`: questions ({"id", "question", "gold_sources": [...], "answerable": bool}) asked of
  an index (`index:`, or `corpus:` ingested into `<out>/<spec>-index`); metrics: citation
  validity (supported citations over citations plus dropped markers), recall@k of the gold
  sources, abstention accuracy.

A system's answer to an item is cached by backend, model, method, prompt, parameters and
input, so an unchanged spec runs again with zero model calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from evals.cache import OutputCache, cache_key
from evals.data import read_jsonl
from evals.runner import Progress, RunContext, backend_for, concurrency_for, summary_document
from evals.runs import Failures, append_line, finish_run, open_run, read_results
from evals.spec import EvalSpec, SystemSpec
from evals.stats import bootstrap_means
from pipelines.errors import BackendError, UsageError
from pipelines.pool import bounded
from pipelines.settings import Settings


def _answer_pal(ctx: RunContext, system: SystemSpec, item: Any, sandbox: Any) -> dict[str, Any]:
    from pipelines.pal import PAL, Baseline, same_answer

    backend, _ = backend_for(ctx, system)
    task = item.task or "math"
    if system.method == "pal":
        runner: Any = PAL(model=backend.chat, sandbox=sandbox, task=task)
    else:
        runner = Baseline(model=backend.chat, method=system.method, task=task)
    result = runner.invoke(item.question)
    correct = bool(result.ok and same_answer(result.answer, item.answer))
    return {
        "output": result.answer,
        "program": result.program,
        "metrics": {"accuracy": 100.0 * correct},
    }


def _answer_rag(
    ctx: RunContext, system: SystemSpec, item: dict[str, Any], index: Any
) -> dict[str, Any]:
    from pipelines.rag import RAG

    backend, _ = backend_for(ctx, system)
    answer = RAG(model=backend.chat, index=index, k=system.k).invoke(item["question"])
    gold = set(item.get("gold_sources") or [])
    got = {Path(r.source).name for r in answer.retrieved}
    recall = 100.0 * len({Path(g).name for g in gold} & got) / len(gold) if gold else 100.0
    checked = len(answer.citations) + answer.dropped_markers
    validity = 100.0 * sum(c.supported for c in answer.citations) / checked if checked else 100.0
    should_abstain = not item.get("answerable", True)
    return {
        "output": answer.answer,
        "citations": [c.model_dump() for c in answer.citations],
        "metrics": {
            "citation_validity": validity,
            "recall@k": recall,
            "abstention_accuracy": 100.0 * (answer.abstained == should_abstain),
        },
    }


def _items(spec: EvalSpec) -> list[Any]:
    if spec.task == "pal":
        from pipelines.pal import load_dataset

        return load_dataset(spec.resolve(spec.dataset))
    rows = read_jsonl(spec.resolve(spec.dataset), "dataset")
    for number, row in rows:
        if not isinstance(row.get("question"), str) or "id" not in row:
            raise UsageError(
                f'{spec.dataset}:{number}: a RAG item needs "id" and "question"',
                hint='e.g. {"id": "q1", "question": "...", "gold_sources": ["a.md"], '
                '"answerable": true}',
            )
    return [row for _, row in rows]


def _index(spec: EvalSpec, out: Path) -> Any:
    from pipelines.rag import Index

    if spec.index is not None:
        return Index(spec.resolve(spec.index))
    if spec.corpus is None:
        raise UsageError(
            "a rag spec needs `index:` or `corpus:`", hint="corpus: path/to/documents/"
        )
    index = Index(out / f"{spec.name}-index")
    index.ingest([spec.resolve(spec.corpus)])
    return index


def _item_id(spec: EvalSpec, item: Any) -> str:
    return str(item.id if spec.task == "pal" else item["id"])


def _answer(
    ctx: RunContext, spec: EvalSpec, system: SystemSpec, item: Any, helper: Any
) -> tuple[dict[str, Any], bool]:
    """One item's record, from the cache or the pipeline, and whether it was cached.
    Runs in the eval's worker threads: the sandbox and the index are safe to share."""
    backend, sys_settings = backend_for(ctx, system)
    params = {k: getattr(sys_settings, k) for k in ("temperature", "seed", "max_tokens", "num_ctx")}
    question = item.question if spec.task == "pal" else item["question"]
    index_state = (str(helper.path), helper.generation()) if spec.task == "rag" else None
    key = cache_key(
        task=spec.task,
        backend=backend.name,
        model=backend.model,
        method=system.method,
        k=system.k,
        params=params,
        input=question,
        task_prompt=getattr(item, "task", None),
        index=index_state,
    )
    cached = ctx.cache.get(key)
    if cached is not None:
        return json.loads(cached), True
    try:
        record = (
            _answer_pal(ctx, system, item, helper)
            if spec.task == "pal"
            else _answer_rag(ctx, system, item, helper)
        )
    except BackendError as exc:  # the backend already tried again where that could help
        return {"error": exc.message}, False
    ctx.cache.put(
        key,
        json.dumps(record, ensure_ascii=False, default=str),
        system=system.name,
        item=_item_id(spec, item),
    )
    return record, False


def run_task(
    spec: EvalSpec,
    out: Path,
    *,
    settings: Settings,
    backend_factory: Callable[[Settings], Any],
    on_step: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    items = _items(spec)
    run_dir, resumed = open_run(out, spec)
    results_path = run_dir / "results.jsonl"
    done = {(r["system"], r["id"]) for r in read_results(results_path)}
    ctx = RunContext(
        spec, settings, OutputCache(settings.cache_dir / "eval-outputs.sqlite"), backend_factory
    )
    progress = Progress(total=len(items) * len(spec.systems), on_step=on_step)
    calls = {s.name: {"model_calls": 0, "cached": 0, "resumed": 0} for s in spec.systems}
    helper: Any = None
    if spec.task == "rag":
        helper = _index(spec, out)
    if spec.task == "pal":
        from pipelines.sandbox import Limits, Sandbox

        helper = Sandbox(Limits.from_settings(settings), isolation=settings.sandbox_isolation)
    failures = Failures(run_dir)
    try:
        for system in spec.systems:
            todo = []
            for item in items:
                if (system.name, _item_id(spec, item)) in done:
                    calls[system.name]["resumed"] += 1
                    progress.resumed += 1
                    progress.step()
                else:
                    todo.append(item)
            backend, _ = backend_for(ctx, system)  # made here, shared by the calls
            answers = bounded(
                partial(_answer, ctx, spec, system, helper=helper),
                todo,
                concurrency_for(ctx, system, backend),
                on_flight=progress.flying,
            )
            for item, (record, cached) in answers:
                if set(record) == {"error"}:
                    progress.step()
                    failures.record(system.name, _item_id(spec, item), record["error"])
                    continue
                failures.succeeded()
                kind = "cached" if cached else "model_calls"
                calls[system.name][kind] += 1
                setattr(progress, kind, getattr(progress, kind) + 1)
                question = item.question if spec.task == "pal" else item["question"]
                expected = item.answer if spec.task == "pal" else item.get("gold_sources") or []
                append_line(
                    results_path,
                    {"system": system.name, "id": _item_id(spec, item), "input": question,
                     "expected": expected, "references": [], **record, "cached": cached},
                )  # fmt: skip
                progress.step()
    finally:
        if spec.task == "pal":
            helper.close()
    failures.check(len(items) * len(spec.systems))
    rows = read_results(results_path)
    summary = _summary(spec, items, rows, calls, run_dir, resumed)
    return finish_run(out, run_dir, spec, summary, rows, [])


def _summary(
    spec: EvalSpec,
    items: list[Any],
    rows: list[dict[str, Any]],
    calls: dict[str, Any],
    run_dir: Path,
    resumed: bool,
) -> dict[str, Any]:
    ids = [str(i.id if spec.task == "pal" else i["id"]) for i in items]
    values: dict[str, dict[str, list[float]]] = {}
    for metric in spec.metrics or []:
        values[metric] = {}
        for system in spec.systems:
            by_id = {r["id"]: r for r in rows if r["system"] == system.name}
            values[metric][system.name] = [float(by_id[i]["metrics"][metric]) for i in ids]
    systems: dict[str, Any] = {
        s.name: {"metrics": {}, **calls[s.name], "outputs_from": "model"} for s in spec.systems
    }
    pairs: dict[str, Any] = {}
    for metric, per_system in values.items():
        boot = bootstrap_means(per_system, ids, spec.bootstrap, spec.seed)
        for name, info in boot["systems"].items():
            systems[name]["metrics"][metric] = info
        pairs[metric] = boot["pairs"]
    return summary_document(spec, run_dir, len(items), systems, pairs, resumed)
