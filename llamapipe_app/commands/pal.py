"""`llamapipe pal ask` and `pal run`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from llamapipe_app.commands import common
from llamapipe_app.commands.common import (
    ConcurrencyFlag,
    JsonFlag,
    VerboseFlag,
    err,
    out,
    print_json,
    progress_bar,
    spinner,
    with_model_flags,
)
from llamapipe_app.commands.shown import print_pal_event
from pipelines.errors import EXIT_FAILED, EXIT_OK, Interrupted, UsageError

if TYPE_CHECKING:
    from pipelines.settings import Settings

# -- PAL -------------------------------------------------------------------------------------

app = typer.Typer(
    help="Program-aided answers: the model writes Python, the sandbox runs it.",
    no_args_is_help=True,
)

TaskFlag = Annotated[
    str,
    typer.Option(
        "--task",
        help="math | math_ko | date | counting | colored_objects | penguins, or a .jinja path.",
    ),
]
FormFlag = Annotated[
    str,
    typer.Option("--form", help="chat (default) or completion: which prompt form the model gets."),
]


def _ready(kit: Any, method: str, task: str, form: str) -> Any:
    """The backend, loaded once the options are known to be good, and for PAL the sandbox,
    started (so a machine without its walls says so before any model call)."""
    from pipelines.pal.pipeline import resolve_task
    from pipelines.toolkit import check_pal_options

    check_pal_options(method, form)
    resolve_task(task, "chat" if form == "chat" else "completion")  # before the model loads
    backend = common.load_model(kit)
    if method == "pal":
        sandbox = kit.sandbox()
        sandbox.start()
        if sandbox.isolation == "unsafe":
            err.print("[bold yellow]UNSAFE:[/bold yellow] programs run without OS walls")
    return backend


@app.command("ask")
@with_model_flags
def pal_ask(
    question: Annotated[str, typer.Argument(help="The question; '-' reads standard input.")],
    task: TaskFlag = "math",
    samples: Annotated[
        int, typer.Option("--samples", "-k", help="Programs to draw and vote on.", min=1)
    ] = 1,
    retries: Annotated[
        int, typer.Option("--retries", help="Fix-ups per program after an error.", min=0)
    ] = 1,
    show_program: Annotated[
        bool, typer.Option("--show-program", help="Show every attempt's program and error.")
    ] = False,
    form: FormFlag = "chat",
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Answer a question with a program the model writes and the sandbox runs."""
    from pipelines.pal import PAL, PALEvent, PALResult
    from prompts import show

    question = common.text_arg(question)
    if not question.strip():
        raise UsageError("the question is empty", hint='e.g. llamapipe pal ask "What is 6 * 7?"')
    result: PALResult | None = None
    with common.toolkit(settings) as kit:
        backend = _ready(kit, "pal", task, form)
        pal = kit.pal(task=task, form=form, samples=samples, retries=retries)
        assert isinstance(pal, PAL)  # method pal, not a baseline
        if verbose:
            err.print(show(pal.render(question)), markup=False, highlight=False)
        common.samples_warning(backend, samples, settings)
        with _samples_progress(backend.model, samples) as finished:
            for item in pal.stream(question):
                if isinstance(item, PALEvent):
                    print_pal_event(item)
                    finished(item, retries)
                else:
                    result = item
    assert result is not None
    if as_json:
        print_json(result.to_json())
    else:
        _print_result(result, show_program, samples)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@contextlib.contextmanager
def _samples_progress(model: str, samples: int) -> Iterator[Callable[[Any, int], None]]:
    """One sample: a spinner while the model writes. Several: a bar of samples finished,
    with elapsed time and ETA. Yields what to call with each event."""
    if samples == 1:
        with spinner(f"{model} is writing a program..."):
            yield lambda event, retries: None
        return
    with progress_bar(f"{samples} samples", samples, unit="samples", rate="samples") as bar:

        def finished(event: Any, retries: int) -> None:
            """A sample ends with a program that ran well, or its last attempt's failure."""
            last = event.attempt == retries
            if (event.kind == "ran" and (event.ok or last)) or (
                event.kind == "generated" and event.error is not None and last
            ):
                bar.advance()

        yield finished


def _print_result(result: Any, show_program: bool, samples: int) -> None:
    from rich.syntax import Syntax

    if show_program:
        for attempt in result.attempts:
            err.rule(f"sample {attempt.sample + 1}, attempt {attempt.attempt + 1}")
            if attempt.program:
                err.print(Syntax(attempt.program, "python", theme="ansi_dark"))
            else:
                err.print(attempt.reply, markup=False, highlight=False)
            if attempt.error:
                err.print(f"[red]{attempt.error.type}[/red]: {attempt.error.message}")
    if result.program and not show_program:  # --show-program printed it above
        out.print(Syntax(result.program, "python", theme="ansi_dark", line_numbers=False))
    if result.ok:
        out.print(f"[b]answer:[/b] {json.dumps(result.answer, ensure_ascii=False)}")
        if len(result.votes) > 1 or samples > 1:
            tally = ", ".join(f"{a} x{n}" for a, n in result.votes.items())
            out.print(f"[dim]votes: {tally}[/dim]")
    else:
        err.print(f"[bold red]no answer:[/bold red] {result.error}")


@app.command("run")
@with_model_flags
def pal_run(
    dataset: Annotated[Path, typer.Argument(help='JSONL of {"id", "question", "answer"}.')],
    method: Annotated[str, typer.Option("--method", help="pal | cot | direct")] = "pal",
    task: TaskFlag = "math",
    samples: Annotated[int, typer.Option("--samples", "-k", min=1)] = 1,
    retries: Annotated[int, typer.Option("--retries", min=0)] = 1,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Only the first N problems.", min=1)
    ] = None,
    form: FormFlag = "chat",
    concurrency: ConcurrencyFlag = None,
    as_json: JsonFlag = False,
    *,
    settings: Settings,
) -> None:
    """Run a dataset and print accuracy (a line's own "task" wins over --task)."""
    from pipelines.pal import load_dataset, same_answer
    from pipelines.pool import default_concurrency
    from pipelines.toolkit import check_pal_options

    check_pal_options(method, form)
    items = load_dataset(dataset)[:limit]
    with common.toolkit(settings) as kit:
        backend = _ready(kit, method, task, form)
        if method == "pal":
            common.samples_warning(backend, samples, settings, what=" per problem")

        def solve(item: Any) -> dict[str, Any]:
            item_task = item.task or task
            runner = kit.pal(
                method=method, task=item_task, form=form, samples=samples, retries=retries
            )
            result = runner.invoke(item.question)
            return {
                "id": item.id, "task": item_task, "lang": item.lang, "question": item.question,
                "expected": item.answer, "answer": result.answer,
                "correct": result.ok and same_answer(result.answer, item.answer),
                "ok": result.ok, "error": result.error,
            }  # fmt: skip

        workers = concurrency or settings.concurrency or default_concurrency(backend.name)
        rows = _solve_all(solve, items, workers, f"{method} on {backend.model}")
    correct = sum(r["correct"] for r in rows)
    doc = {
        "dataset": str(dataset), "method": method, "backend": backend.name,
        "model": backend.model, "correct": correct, "total": len(rows),
        "accuracy": round(correct / len(rows), 4), "items": rows,
    }  # fmt: skip
    if method == "pal" and settings.sandbox_isolation == "unsafe":
        doc["unsafe"] = True  # as `pal ask --json` and `sandbox run --json` label it
    if as_json:
        print_json(doc)
    else:
        _print_accuracy(rows)


def _solve_all(solve: Any, items: list[Any], workers: int, label: str) -> list[dict[str, Any]]:
    """Every item's row, in the dataset's order, under a progress bar."""
    from pipelines.pool import bounded

    rows: list[dict[str, Any]] = []
    try:
        with progress_bar(label, len(items), unit="problems", rate="problems") as bar:
            for _, row in bounded(solve, items, workers):
                rows.append(row)
                bar.advance()
    except KeyboardInterrupt:
        hits = sum(r["correct"] for r in rows)
        raise Interrupted(
            f"after {len(rows)} of {len(items)} problems ({hits} correct so far); "
            "pal run keeps no partial results",
            hint="run it again; --limit N runs only the first N problems",
        ) from None
    order = {item.id: n for n, item in enumerate(items)}
    rows.sort(key=lambda r: order[r["id"]])  # finished in any order; shown in the dataset's
    return rows


def _print_accuracy(rows: list[dict[str, Any]]) -> None:
    correct = sum(r["correct"] for r in rows)
    table = Table("task", "correct", "total", "accuracy", header_style="bold")
    for name in sorted({r["task"] for r in rows}):
        group = [r for r in rows if r["task"] == name]
        hits = sum(r["correct"] for r in group)
        table.add_row(name, str(hits), str(len(group)), f"{hits / len(group):.0%}")
    table.add_row("[b]all[/b]", str(correct), str(len(rows)), f"[b]{correct / len(rows):.0%}[/b]")
    out.print(table)
