"""What every command shares: the consoles, the model flags, the Toolkit, JSON output,
spinners and progress bars.

Data goes to stdout (one JSON document with --json); progress, spinners, notes and
errors go to stderr, bars and spinners only when it is a terminal.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from pipelines.backends.registry import REGISTRY
from pipelines.errors import UsageError
from pipelines.settings import host_field, load_settings, model_field

if TYPE_CHECKING:
    from pipelines.settings import Settings
    from pipelines.toolkit import Toolkit

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# -- shared model flags ---------------------------------------------------------------------


def _flag(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel="Model", show_default=False, **kw)


_MODEL_FLAGS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    for name, annotation in {
        "backend": Annotated[
            Optional[str],
            _flag("--backend", "-b", help=" | ".join(REGISTRY.choices()), metavar="NAME"),
        ],
        "model": Annotated[
            Optional[str],
            _flag("--model", "-m", help="Ollama tag (llama3.1:8b), or an OpenAI server's model id"),
        ],
        "host": Annotated[
            Optional[str],
            _flag(
                "--host",
                help="Ollama address (default: OLLAMA_HOST), or the OpenAI-compatible base URL",
            ),
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


def settings_from_flags(flags: dict[str, Any]) -> Settings:
    """The effective settings; `--model` and `--host` name the chosen backend's model and
    server (Ollama's tag and host, or the OpenAI-compatible server's model id and URL)."""
    model, host = flags.pop("model", None), flags.pop("host", None)
    if model is None and host is None:
        return load_settings(flags)
    backend = load_settings(flags).backend
    for flag, field, value in (
        ("--model", model_field(backend), model),
        ("--host", host_field(backend), host),
    ):
        if value is None:
            continue
        if field is None:
            raise UsageError(f"the {backend} backend takes no {flag}", hint=f"leave {flag} out")
        flags[field] = value
    return load_settings(flags)


def with_model_flags(fn: Callable[..., Any] | None = None, *, without: tuple[str, ...] = ()) -> Any:
    """Give a command the model flags (but those named in `without`, which the command
    uses for itself); it receives the effective `settings` instead."""
    if fn is None:
        return functools.partial(with_model_flags, without=without)
    model_flags = [p for p in _MODEL_FLAGS if p.name not in without]
    # The `settings` parameter is dropped below, so its annotation (Settings, named in type
    # hints only, so that --help never builds the settings model) stays a string.
    signature = inspect.signature(fn, eval_str=True, locals={"Settings": "Settings"})
    own = [p for p in signature.parameters.values() if p.name != "settings"]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        flags = {p.name: kwargs.pop(p.name) for p in model_flags}
        return fn(*args, settings=settings_from_flags(flags), **kwargs)

    command.__signature__ = signature.replace(parameters=own + model_flags)  # type: ignore[attr-defined]
    # typer reads the annotations too: the evaluated ones of the parameters it parses
    command.__annotations__ = {p.name: p.annotation for p in own + model_flags}
    return command


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ConcurrencyFlag = Annotated[
    Optional[int],
    typer.Option(
        "--concurrency",
        "-j",
        min=1,
        max=256,
        help="Model calls at once (default: LLAMAPIPE_CONCURRENCY, else what the backend "
        "declares: `llamapipe config` shows each).",
    ),
]
VerboseFlag = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the rendered prompt on stderr.")
]

# -- shared by `chat` and `rag` -------------------------------------------------------------

SessionFlag = Annotated[
    Optional[str],
    typer.Option("--session", help="Save the turns in this session; continue it if it exists."),
]
ContinueFlag = Annotated[
    bool, typer.Option("--continue", "-c", help="Continue the most recent session.")
]
LinesFlag = Annotated[
    bool, typer.Option("--lines", help="Piped input: one turn per line (else one turn).")
]
IndexFlag = Annotated[
    Optional[Path],
    typer.Option(
        "--index", help="Index folder (default: <data_dir>/index; see `llamapipe config`)."
    ),
]
KFlag = Annotated[int, typer.Option("--k", help="Passages to retrieve.", min=1, max=50)]


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


# -- progress on long work ----------------------------------------------------------------


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{round(seconds / 60)} min"


class _Count(ProgressColumn):
    """`done/total unit`, or the task's own `count` field when it has one."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        shown = task.fields.get("count")
        if not shown:
            total = "?" if task.total is None else f"{int(task.total)}"
            shown = f"{int(task.completed)}/{total}{' ' + self.unit if self.unit else ''}"
        return Text(shown)


class _Times(ProgressColumn):
    """`0:12 elapsed, ETA 0:40` (the ETA once the rate is known)."""

    def render(self, task: Task) -> Text:
        shown = f"{_clock(task.elapsed or 0)} elapsed"
        if task.finished:
            return Text(shown, style="dim")
        left = task.time_remaining
        return Text(f"{shown}, ETA {'-:--' if left is None else _clock(left)}", style="dim")


class _Rate(ProgressColumn):
    """How fast: `1.2 MB/s` (for bytes), `3.4 problems/min`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("")
        if self.unit == "bytes":
            from rich.filesize import decimal

            return Text(f"{decimal(int(speed))}/s", style="dim")
        if speed < 0.5:
            return Text(f"{speed * 60:.1f} {self.unit}/min", style="dim")
        return Text(f"{speed:.1f} {self.unit}/s", style="dim")


class Bar:
    """What a command moves along: one task of a rich Progress (nothing shows off a terminal)."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress, self.task = progress, task

    def update(self, **fields: Any) -> None:
        self.progress.update(self.task, **fields)

    def advance(self, amount: float = 1.0, **fields: Any) -> None:
        self.progress.update(self.task, advance=amount, **fields)

    def restart(self, label: str, total: float | None, **fields: Any) -> None:
        """A new phase of the work: a new label and total, its own elapsed time and ETA."""
        self.progress.reset(self.task, total=total, completed=0, description=label, **fields)


@contextmanager
def progress_bar(
    label: str,
    total: float | None = None,
    *,
    unit: str = "",
    rate: str | None = None,
    note: bool = False,
) -> Iterator[Bar]:
    """A bar on stderr, only when it is a terminal (stdout and --json stay clean; no stale
    bar in logs): the label, the bar, `done/total unit`, elapsed time and ETA, the `rate`
    (`rate` units per second, or bytes per second for "bytes") where one means something,
    and a `note` field when asked. Lines printed on `err` meanwhile appear above it."""
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), _Count(unit), _Times()]
    if rate:
        columns.append(_Rate(rate))
    if note:
        columns.append(TextColumn("[dim]{task.fields[note]}"))
    progress = Progress(*columns, console=err, disable=not err.is_terminal)
    with progress:
        yield Bar(progress, progress.add_task(label, total=total, note="", count=""))


# Tokens per second assumed for a warning, before anything is known: a small GGUF on a
# laptop's CPU writes 20 to 150; a larger one less. The bar then shows the real pace.
_ASSUMED_TOKENS_PER_SECOND = 25


def samples_warning(backend: Any, samples: int, settings: Settings, what: str = "") -> None:
    """One line on stderr when `--samples K` (K > 1) runs on a backend that takes one call
    at a time (the embedded model): the K generations run one after another."""
    from pipelines.pool import default_concurrency

    if samples <= 1 or (settings.concurrency or default_concurrency(backend.name)) > 1:
        return
    most = samples * settings.max_tokens / _ASSUMED_TOKENS_PER_SECOND
    err.print(
        f"[yellow]note:[/yellow] --samples {samples}{what} on the {backend.name} model runs "
        f"{samples} generations one after another (it answers one at a time): about "
        f"{samples}x one answer, up to ~{_duration(most)} at {settings.max_tokens} tokens each",
        highlight=False,
    )


def prompt_tokens(model: Any, prompt: Any) -> int:
    """The prompt's length in tokens: by the model's tokenizer when it has one, else the
    budget's estimate (either way about: the caller says ~)."""
    from pipelines.budget import budget_for

    try:
        return budget_for(model).count(prompt)
    except Exception:  # a model that cannot count: a rough guess beats none
        return max(1, len(str(prompt)) // 3)


@contextmanager
def reading_prompt(model: Any, prompt: Any) -> Iterator[None]:
    """A spinner `reading the prompt (~N tokens)` while the model reads it (before its first
    token); it disappears when the `with` block ends. Only on a terminal."""
    if not err.is_terminal:
        yield
        return
    with spinner(f"reading the prompt (~{prompt_tokens(model, prompt)} tokens)..."):
        yield


@contextmanager
def first_token_spinner() -> Iterator[None]:
    """While inside, every streamed model call of the pipelines shows `reading_prompt`
    until its first token arrives."""
    from pipelines.streaming import watching_prompts

    with watching_prompts(reading_prompt):
        yield


def announce(backend: Any) -> None:
    err.print(f"[dim]backend: {backend.name} ({backend.model}) - {backend.reason}[/dim]")


def toolkit(settings: Settings) -> Toolkit:
    """What a command builds its pipelines with."""
    from pipelines.toolkit import Toolkit

    return Toolkit(settings)


def load_model(kit: Toolkit, settings: Settings | None = None) -> Any:
    """The toolkit's backend (or a variant's, for `settings`), loaded under a spinner; the
    `backend: name (model) - reason` line on stderr says which."""
    if settings is None:
        backend = kit.backend(progress=spinner)
    else:
        backend = kit.backend_for(settings, progress=spinner)
    announce(backend)
    return backend


def text_arg(value: str) -> str:
    """A text argument, where '-' means: read it from standard input."""
    if value != "-":
        return value
    from pipelines.inputs import decode_text

    return decode_text(sys.stdin.buffer.read(), "standard input")
