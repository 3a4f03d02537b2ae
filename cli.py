"""The `llamapipe` command: a thin typer + rich layer over `pipelines` and `evals`.

Data goes to stdout (one JSON document with --json); progress, spinners, notes
and errors go to stderr. Errors from the library arrive as `LlamapipeError`
and leave as one red line, a hint, and the exit code documented in the README.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipelines import __version__
from pipelines.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LlamapipeError,
    UsageError,
)
from pipelines.settings import Settings, describe_settings, load_settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="llamapipe",
    help="""Composable LLM pipelines on a locally served Llama (Ollama), or on a small
embedded model when no server is there.

[b]Examples[/b]

  llamapipe chat "Explain a hyangga in one sentence."
  llamapipe chat "안녕하세요! 자기소개 해 주세요." --backend embedded
  OLLAMA_HOST=10.0.0.5 llamapipe chat "Hello" --model llama3.2:3b
  llamapipe models --json
  llamapipe config
""",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# -- shared model flags ---------------------------------------------------------------------


def _flag(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel="Model", show_default=False, **kw)


_MODEL_FLAGS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    for name, annotation in {
        "backend": Annotated[
            Optional[str],
            _flag("--backend", "-b", help="auto | ollama | embedded", metavar="NAME"),
        ],
        "ollama_model": Annotated[
            Optional[str], _flag("--model", "-m", help="Ollama model tag, e.g. llama3.1:8b")
        ],
        "ollama_host": Annotated[
            Optional[str], _flag("--host", help="Ollama address (default: OLLAMA_HOST)")
        ],
        "gguf": Annotated[
            Optional[Path], _flag("--gguf", help="GGUF file for the embedded backend")
        ],
        "temperature": Annotated[Optional[float], _flag("--temperature", "-t", help="0 = greedy")],
        "seed": Annotated[Optional[int], _flag("--seed", help="sampling seed")],
        "max_tokens": Annotated[
            Optional[int], _flag("--max-tokens", help="most tokens to generate")
        ],
        "num_ctx": Annotated[Optional[int], _flag("--num-ctx", help="context window in tokens")],
        "stop": Annotated[Optional[list[str]], _flag("--stop", help="stop sequence (repeatable)")],
    }.items()
]


def with_model_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the model flags; it receives the effective `settings` instead."""
    signature = inspect.signature(fn, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "settings"]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        flags = {p.name: kwargs.pop(p.name) for p in _MODEL_FLAGS}
        return fn(*args, settings=load_settings(flags), **kwargs)

    command.__signature__ = signature.replace(parameters=own + _MODEL_FLAGS)  # type: ignore[attr-defined]
    return command


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VerboseFlag = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the rendered prompt on stderr.")
]


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner on stderr (only when stderr is a terminal)."""
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield


def announce(backend: Any) -> None:
    err.print(f"[dim]backend: {backend.name} ({backend.model}) - {backend.reason}[/dim]")


def load_model(settings: Settings) -> Any:
    from pipelines.backends import load_backend

    with spinner("Looking for a model..."):
        backend = load_backend(settings)
    with spinner(f"Loading {backend.model}..."):
        backend.warm()
    return backend


# -- commands --------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        out.print(f"llamapipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """llamapipe: PAL, RAG and evals on your own Llama."""


@app.command()
def config(as_json: JsonFlag = False) -> None:
    """Show every setting's effective value and where it came from."""
    settings = load_settings()
    rows = describe_settings(settings)
    path = settings.config_file
    if as_json:
        print_json(
            {"config_file": str(path), "config_file_exists": path.is_file(), "settings": rows}
        )
        return
    state = "" if path.is_file() else " [dim](not present)[/dim]"
    err.print(f"config file: {path}{state}")
    table = Table(header_style="bold", show_lines=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("meaning", ratio=1)
    for row in rows:
        style = "dim" if row["source"] == "default" else "green"
        value = json.dumps(row["value"], ensure_ascii=False)
        table.add_row(row["name"], value, f"[{style}]{row['source']}[/{style}]", row["description"])
    out.print(table)


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """List backends: Ollama's reachability and models, the embedded GGUF, and the auto choice."""
    from pipelines.backends import choose_backend, embedded_gguf, probe
    from pipelines.backends.embedded import llama_cpp_version
    from pipelines.backends.gguf import read_gguf_info
    from pipelines.backends.ollama import normalize_host

    settings = load_settings()
    host = normalize_host(settings.ollama_host)
    with spinner(f"Asking Ollama at {host}..."):
        status = probe(host, settings.probe_timeout)
    embedded: dict[str, Any] = {"llama_cpp": llama_cpp_version()}
    try:
        info = read_gguf_info(embedded_gguf(settings))
        embedded.update(
            path=str(info.path),
            size_bytes=info.size_bytes,
            architecture=info.architecture,
            name=info.name,
            size_label=info.size_label,
            parameters=info.parameters,
            context_length=info.context_length,
            error=None,
        )
    except LlamapipeError as exc:
        embedded.update(path=str(settings.gguf or ""), error=str(exc))
    try:
        choice, reason, _ = choose_backend(settings.model_copy(update={"backend": "auto"}))
    except LlamapipeError as exc:
        choice, reason = None, str(exc)
    document = {
        "ollama": {
            "host": host,
            "reachable": status.reachable,
            "version": status.version,
            "error": status.error,
            "model": settings.ollama_model,
            "has_model": status.has_model(settings.ollama_model),
            "models": status.models,
        },
        "embedded": embedded,
        "auto": {"choice": choice, "reason": reason},
    }
    if as_json:
        print_json(document)
        return
    _print_models(document)


def _print_models(doc: dict[str, Any]) -> None:
    ollama, embedded = doc["ollama"], doc["embedded"]
    if ollama["reachable"]:
        out.print(
            f"[b]ollama[/b]   {ollama['host']}  [green]reachable[/green] "
            f"(version {ollama['version']})"
        )
        table = Table("model", "size", "family", "parameters", "quantization", header_style="bold")
        for m in ollama["models"]:
            size = f"{(m['size_bytes'] or 0) / 1e9:.1f} GB"
            table.add_row(
                m["name"],
                size,
                m["family"] or "",
                m["parameter_size"] or "",
                m["quantization"] or "",
            )
        out.print(table if ollama["models"] else "  no models pulled yet")
    else:
        out.print(f"[b]ollama[/b]   {ollama['host']}  [red]not reachable[/red] ({ollama['error']})")
    if embedded.get("error"):
        out.print(f"[b]embedded[/b] [red]{embedded['error']}[/red]")
    else:
        out.print(
            f"[b]embedded[/b] {embedded['path']}\n"
            f"         {embedded['name']} · {embedded['architecture']} · "
            f"{embedded['parameters'] / 1e6:.0f}M parameters · "
            f"{embedded['size_bytes'] / 1e6:.0f} MB · "
            f"context {embedded['context_length']}"
        )
    llama = embedded["llama_cpp"] or "[red]not installed[/red]"
    out.print(f"         llama-cpp-python {llama}")
    out.print(f"[b]auto[/b]     → {doc['auto']['choice']}: {doc['auto']['reason']}")


@app.command()
@with_model_flags
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask; '-' reads standard input.")],
    system: Annotated[
        Optional[str], typer.Option("--system", "-s", help="A system message.")
    ] = None,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Send one prompt and stream the answer."""
    from prompts import load_prompt, show

    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise UsageError("the prompt is empty", hint='pass some text, e.g. llamapipe chat "Hello"')
    backend = load_model(settings)
    announce(backend)
    template = load_prompt("chat/default")
    variables = {"prompt": prompt, "system": system or ""}
    if verbose:
        err.print(show(template.invoke(variables)), markup=False, highlight=False)
    chain = template | backend.chat
    started = time.perf_counter()
    if as_json:
        with spinner(f"Generating with {backend.model}..."):
            message = chain.invoke(variables)
        print_json(
            {
                "text": message.text,
                "backend": backend.name,
                "model": backend.model,
                "reason": backend.reason,
                "usage": message.usage_metadata,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        return
    with spinner(f"Waiting for {backend.model}..."):
        stream = chain.stream(variables)
        first = next(stream, None)
    if first is not None:
        sys.stdout.write(first.text)
    for chunk in stream:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")


# -- sandbox ---------------------------------------------------------------------------------

sandbox_app = typer.Typer(
    help="Run Python behind the OS walls PAL uses (namespaces, Landlock, seccomp, rlimits).",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("run")
def sandbox_run(
    file: Annotated[
        str, typer.Argument(help="The program; '-' (the default) reads standard input.")
    ] = "-",
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="Seconds it may run (default 5).")
    ] = None,
    memory: Annotated[
        Optional[int], typer.Option("--memory", help="MiB of memory it may use (default 256).")
    ] = None,
    allow_module: Annotated[
        Optional[list[str]],
        typer.Option("--allow-module", help="Also allow importing this module (repeatable)."),
    ] = None,
    isolation: Annotated[
        Optional[str],
        typer.Option("--isolation", help="linux (default) | unsafe: no OS walls, labelled so."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a program in a fresh sandboxed process; if it defines solution(), print its value.

    Exit code 0 when it ran and returned, 1 when it raised or was stopped, 2 for bad
    input, 3 when this system cannot build the walls.
    """
    from pipelines.sandbox import Limits, Sandbox

    settings = load_settings({"sandbox_isolation": isolation} if isolation else {})
    code = _read_program(file)
    limits = Limits.from_settings(
        settings,
        timeout=timeout,
        memory_mb=memory,
        extra_modules=(*settings.sandbox_modules, *(allow_module or [])),
    )
    with Sandbox(limits, workers=0, isolation=settings.sandbox_isolation) as sandbox:
        result = sandbox.run(code)
    if result.unsafe:
        err.print("[bold yellow]UNSAFE:[/bold yellow] ran without OS walls (--isolation unsafe)")
    if as_json:
        print_json(result.to_json())
    else:
        _print_run(result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def _read_program(file: str) -> str:
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"no such file: {file}", hint="pass a Python file, or - for stdin"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{file} is a directory", hint="pass a Python file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{file} is not UTF-8 text ({exc.reason})", hint="save it as UTF-8"
        ) from None


def _print_run(result: Any) -> None:
    if result.stdout:
        sys.stdout.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
    if result.stderr:
        err.print(result.stderr, markup=False, highlight=False, end="")
    if result.ok:
        if result.result is not None:
            out.print(json.dumps(result.result, ensure_ascii=False), markup=False)
    elif result.error:
        if result.error.traceback:
            err.print(result.error.traceback.rstrip(), markup=False, highlight=False)
        killed = f" [dim](killed: {result.killed})[/dim]" if result.killed else ""
        err.print(f"[bold red]{result.error.type}:[/bold red] {result.error.message}{killed}")
    err.print(f"[dim]{result.duration_ms:.1f} ms[/dim]")


# -- PAL -------------------------------------------------------------------------------------

pal_app = typer.Typer(
    help="Program-aided answers: the model writes Python, the sandbox runs it.",
    no_args_is_help=True,
)
app.add_typer(pal_app, name="pal")

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


def _pal_parts(settings: Settings, form: str) -> tuple[Any, Any]:
    """The model in the asked-for form, and a started sandbox."""
    from pipelines.sandbox import Limits, Sandbox

    if form not in ("chat", "completion"):
        raise UsageError(f"--form must be chat or completion, not {form!r}")
    backend = load_model(settings)
    announce(backend)
    sandbox = Sandbox(Limits.from_settings(settings), isolation=settings.sandbox_isolation)
    sandbox.start()
    if sandbox.isolation == "unsafe":
        err.print("[bold yellow]UNSAFE:[/bold yellow] programs run without OS walls")
    return backend, sandbox


@pal_app.command("ask")
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
    from rich.syntax import Syntax

    from pipelines.pal import PAL, PALEvent, PALResult
    from prompts import show

    if question == "-":
        question = sys.stdin.read()
    if not question.strip():
        raise UsageError("the question is empty", hint='e.g. llamapipe pal ask "What is 6 * 7?"')
    backend, sandbox = _pal_parts(settings, form)
    model = backend.chat if form == "chat" else backend.completion
    pal = PAL(model=model, sandbox=sandbox, task=task, samples=samples, retries=retries)
    if verbose:
        err.print(show(pal.render(question)), markup=False, highlight=False)
    result: PALResult | None = None
    try:
        with spinner(f"{backend.model} is writing a program..."):
            for item in pal.stream(question):
                if isinstance(item, PALEvent):
                    _print_pal_event(item)
                else:
                    result = item
    finally:
        sandbox.close()
    assert result is not None
    if as_json:
        print_json(result.to_json())
    else:
        if show_program:
            for attempt in result.attempts:
                err.rule(f"sample {attempt.sample + 1}, attempt {attempt.attempt + 1}")
                if attempt.program:
                    err.print(Syntax(attempt.program, "python", theme="ansi_dark"))
                else:
                    err.print(attempt.reply, markup=False, highlight=False)
                if attempt.error:
                    err.print(f"[red]{attempt.error.type}[/red]: {attempt.error.message}")
        if result.program:
            out.print(Syntax(result.program, "python", theme="ansi_dark", line_numbers=False))
        if result.ok:
            out.print(f"[b]answer:[/b] {json.dumps(result.answer, ensure_ascii=False)}")
            if len(result.votes) > 1 or samples > 1:
                tally = ", ".join(f"{a} x{n}" for a, n in result.votes.items())
                out.print(f"[dim]votes: {tally}[/dim]")
        else:
            err.print(f"[bold red]no answer:[/bold red] {result.error}")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def _print_pal_event(event: Any) -> None:
    where = (
        f"sample {event.sample + 1}, attempt {event.attempt + 1}"
        if event.sample is not None
        else ""
    )
    if event.kind == "ran":
        status = "[green]ran[/green]" if event.ok else f"[red]{event.error.type}[/red]"
        err.print(f"[dim]{where}:[/dim] {status}", highlight=False)
    elif event.kind == "generated" and event.error is not None:
        err.print(f"[dim]{where}:[/dim] [red]{event.error.type}[/red]", highlight=False)


@pal_app.command("run")
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
    as_json: JsonFlag = False,
    *,
    settings: Settings,
) -> None:
    """Run a dataset and print accuracy (a line's own "task" wins over --task)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pipelines.pal import PAL, Baseline, load_dataset, same_answer

    if method not in ("pal", "cot", "direct"):
        raise UsageError(f"--method must be pal, cot or direct, not {method!r}")
    items = load_dataset(dataset)[:limit]
    backend, sandbox = _pal_parts(settings, form)
    model = backend.chat if form == "chat" else backend.completion
    rows = []
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    )
    try:
        with progress:
            bar = progress.add_task(f"{method} on {backend.model}", total=len(items))
            for item in items:
                item_task = item.task or task
                runner: Any
                if method == "pal":
                    runner = PAL(
                        model=model,
                        sandbox=sandbox,
                        task=item_task,
                        samples=samples,
                        retries=retries,
                    )
                else:
                    runner = Baseline(model=model, method=method, task=item_task)  # type: ignore[arg-type]
                result = runner.invoke(item.question)
                correct = result.ok and same_answer(result.answer, item.answer)
                rows.append(
                    {
                        "id": item.id,
                        "task": item_task,
                        "lang": item.lang,
                        "question": item.question,
                        "expected": item.answer,
                        "answer": result.answer,
                        "correct": correct,
                        "ok": result.ok,
                        "error": result.error,
                    }
                )
                progress.advance(bar)
    finally:
        sandbox.close()
    correct = sum(r["correct"] for r in rows)
    doc = {
        "dataset": str(dataset),
        "method": method,
        "backend": backend.name,
        "model": backend.model,
        "correct": correct,
        "total": len(rows),
        "accuracy": round(correct / len(rows), 4),
        "items": rows,
    }
    if as_json:
        print_json(doc)
        return
    table = Table("task", "correct", "total", "accuracy", header_style="bold")
    for name in sorted({r["task"] for r in rows}):
        group = [r for r in rows if r["task"] == name]
        hits = sum(r["correct"] for r in group)
        table.add_row(name, str(hits), str(len(group)), f"{hits / len(group):.0%}")
    table.add_row("[b]all[/b]", str(correct), str(len(rows)), f"[b]{correct / len(rows):.0%}[/b]")
    out.print(table)


# -- entry point -----------------------------------------------------------------------------


def report(exc: LlamapipeError) -> None:
    err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {exc.hint}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see pipelines.errors)."""
    try:
        # Standalone mode: typer reports usage errors (exit 2) and turns Ctrl-C into 130.
        app(args=argv, prog_name="llamapipe")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except LlamapipeError as exc:
        report(exc)
        return exc.exit_code
    except Exception as exc:  # a bug: keep it short, unless asked for the traceback
        if os.environ.get("LLAMAPIPE_DEBUG"):
            raise
        err.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}\n"
            "[yellow]hint:[/yellow] this is a bug in llamapipe; rerun with LLAMAPIPE_DEBUG=1 "
            "for the traceback and report it",
            highlight=False,
        )
        return 1
    return EXIT_OK


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
