"""The `llamapipe` command: a thin typer + rich layer over `pipelines` and `evals`.

Data goes to stdout (one JSON document with --json); progress, spinners, notes
and errors go to stderr. Errors from the library arrive as `LlamapipeError`
and leave as one red line, a hint, and the exit code documented in the README.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Annotated, Any

import typer

from llamapipe_app.commands import chat, evals, general, pal, rag, sandbox, serve, sessions
from llamapipe_app.commands.common import err, out
from pipelines import __version__
from pipelines.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Interrupted,
    LlamapipeError,
    PromptTruncatedWarning,
    UsageError,
)

app = typer.Typer(
    name="llamapipe",
    help="""Composable LLM pipelines on a locally served Llama (Ollama), or on a small
embedded model when no server is there.

[b]Examples[/b]

  llamapipe chat "Explain a hyangga in one sentence."
  llamapipe chat              # a conversation; chat -c continues the last one
  llamapipe chat "안녕하세요! 자기소개 해 주세요." --backend embedded
  OLLAMA_HOST=10.0.0.5 llamapipe chat "Hello" --model llama3.2:3b
  llamapipe models --json
  llamapipe pal ask "12 eggs a box: how many in 7 boxes?" --samples 3
  llamapipe pal run evals/datasets/pal/problems.jsonl --method cot
  llamapipe sandbox run program.py --timeout 5 --json
  llamapipe rag ingest docs/ && llamapipe rag ask "처용가는 누가 지었나요?"
  llamapipe eval run evals/specs/hyangga.yaml
  llamapipe serve             # the web page: http://127.0.0.1:8765/
  llamapipe config
""",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


app.command()(general.config)
app.command()(general.models)
app.command()(chat.chat)
app.add_typer(sessions.sessions_app, name="sessions")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(pal.app, name="pal")
app.add_typer(rag.app, name="rag")
app.add_typer(evals.app, name="eval")
app.command()(serve.serve)


# -- entry point -----------------------------------------------------------------------------


def report(exc: LlamapipeError) -> None:
    err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {exc.hint}", highlight=False)


def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """A library warning as one yellow line and a hint, never a source-code excerpt."""
    hint = getattr(message, "hint", None)
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
    if hint:
        err.print(f"[yellow]hint:[/yellow] {hint}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see pipelines.errors)."""
    warnings.showwarning = show_warning
    warnings.simplefilter("always", PromptTruncatedWarning)  # every cut prompt is news
    try:
        # Standalone mode: typer reports usage errors (exit 2) and turns Ctrl-C into 130.
        app(args=argv, prog_name="llamapipe")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else 1
        if code == EXIT_INTERRUPTED:  # typer's answer to a KeyboardInterrupt
            err.print("[bold yellow]interrupted[/bold yellow]")
        return code
    except KeyboardInterrupt:
        err.print("[bold yellow]interrupted[/bold yellow]")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        err.print(f"[bold yellow]interrupted:[/bold yellow] {exc.message}", highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/yellow] {exc.hint}", highlight=False)
        return exc.exit_code
    except LlamapipeError as exc:
        report(exc)
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None:
            return _internal(exc)
        # A path the user gave or owns (an output folder, a config or data dir): theirs to fix.
        path = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        report(
            UsageError(
                f"cannot use {path}: {exc.strerror}", hint="check the path and its permissions"
            )
        )
        return EXIT_USAGE
    except Exception as exc:  # a bug
        return _internal(exc)
    return EXIT_OK


def _internal(exc: BaseException) -> int:
    """A bug: one short message, unless LLAMAPIPE_DEBUG asks for the traceback."""
    if os.environ.get("LLAMAPIPE_DEBUG"):
        raise exc
    err.print(
        f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}\n"
        "[yellow]hint:[/yellow] this is a bug in llamapipe; rerun with LLAMAPIPE_DEBUG=1 "
        "for the traceback and report it",
        highlight=False,
    )
    return 1


def _interrupt(signum: int, frame: Any) -> None:
    """The first Ctrl-C stops the command (KeyboardInterrupt in the main thread); later ones
    are ignored, so they cannot break the clean-up it starts (stopping sandboxed programs,
    rolling back an ingest) halfway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def entry() -> None:
    """The console script: `main` with Ctrl-C handled as a command-line program should."""
    signal.signal(signal.SIGINT, _interrupt)
    code = main()
    if code == EXIT_INTERRUPTED:
        # Model calls still running in worker threads (PAL samples, batches) cannot be
        # cancelled, and a normal exit would wait for each to finish. Everything worth keeping
        # was kept or rolled back on the way out, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
