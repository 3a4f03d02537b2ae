"""Running a spec: outputs (cached, resumable), scores, intervals, history, reports.

A run lives in `<out>/<run-id>/`: `run.json` (what is being run, what each system ran and
the environment it ran in: evals/identity.py), `results.jsonl` (one line per system and
item, appended as each finishes), then `summary.json`, `report.md` and `report.html` when
it is done. Running an unchanged spec again after a crash or a kill resumes the unfinished
run: finished lines are kept, a torn last line is cut, and the rest is produced (from the
cache when the model had already answered).

The runner drives every task alike and knows none by name (evals/tasks/ registers them): it
asks each system's missing items of the task, at most `concurrency` at once, and writes each
result as one whole line from this one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.cache import OutputCache
from evals.context import ModelFactory, Progress, RunContext, backend_for, concurrency_for
from evals.identity import environment, ran_by_model, ran_from_outputs
from evals.runs import (
    Failures,
    append_line,
    finish_run,
    open_run,
    read_results,
    record_environment,
    record_ran,
    truncation_recorded,
)
from evals.spec import EvalSpec, SystemSpec, check_inputs
from evals.tasks import Produced, Task, task_for
from pipelines.pool import bounded

if TYPE_CHECKING:
    from pipelines.settings import Settings

__all__ = ["Progress", "read_results", "run_spec"]

Calls = dict[str, dict[str, int]]


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
    task = task_for(spec, out, settings)
    items = task.load()[: spec.limit]  # the first `limit` items (`eval run --limit`)
    run_dir, resumed = open_run(out, spec)
    record_environment(run_dir, environment(settings))
    results_path = run_dir / "results.jsonl"
    done = {(r["system"], r["id"]) for r in read_results(results_path)}
    ctx = RunContext(
        spec, settings, OutputCache(settings.cache_dir / "eval-outputs.sqlite"), backend_factory
    )
    progress = Progress(total=len(items) * len(spec.systems), on_step=on_step)
    calls = {
        s.name: {"model_calls": 0, "cached": 0, "given": 0, "resumed": 0} for s in spec.systems
    }
    failures = Failures(run_dir)
    ran: dict[str, dict[str, Any]] = {}
    task.open()
    try:
        for system in spec.systems:
            todo = []
            for item in items:
                if (system.name, task.item_id(item)) in done:
                    calls[system.name]["resumed"] += 1
                    progress.resumed += 1
                    progress.step()
                else:
                    todo.append(item)
            produced = _produced(ctx, task, system, todo, progress, ran)
            record_ran(run_dir, ran)  # in run.json before its first output is asked for
            for item, made in produced:
                _keep(task, system, item, made, results_path, calls, progress, failures)
    finally:
        task.close()
    failures.check(len(items) * len(spec.systems))
    rows = read_results(results_path)
    summary = task.summarise(items, rows, calls, run_dir, resumed)
    for name, what in ran.items():
        summary["systems"][name]["ran"] = what
    report_items, stats = task.report_items()
    ids = {task.item_id(i) for i in items}
    report_items = [i for i in report_items if task.item_id(i) in ids]
    return finish_run(out, run_dir, spec, summary, rows, report_items, stats)


def _produced(
    ctx: RunContext,
    task: Task,
    system: SystemSpec,
    todo: list[Any],
    progress: Progress,
    ran: dict[str, dict[str, Any]],
) -> Iterable[tuple[Any, Produced]]:
    """The system's outputs for `todo`: given ones as they are, else asked of its backend
    (made here, shared by the calls); what it ran is put in `ran`."""
    given = task.prepared(system, todo)
    if given is not None:
        ran[system.name] = ran_from_outputs(ctx.spec, system)
        return given
    backend, settings = backend_for(ctx, system)
    ran[system.name] = ran_by_model(task, system, backend, settings)
    return bounded(
        partial(task.produce, ctx, system),
        todo,
        concurrency_for(ctx, system, backend),
        on_flight=progress.flying,
    )


def _keep(
    task: Task,
    system: SystemSpec,
    item: Any,
    made: Produced,
    results_path: Path,
    calls: Calls,
    progress: Progress,
    failures: Failures,
) -> None:
    """One output: its results line and counts, or its failure recorded."""
    if made.failed:
        progress.step()
        failures.record(system.name, task.item_id(item), made.error or "")
        return
    failures.succeeded()
    if made.given:
        calls[system.name]["given"] += 1
    elif made.counted:
        kind = "cached" if made.cached else "model_calls"
        calls[system.name][kind] += 1
        setattr(progress, kind, getattr(progress, kind) + 1)
    append_line(results_path, task.row(system, item, made))
    progress.step()
