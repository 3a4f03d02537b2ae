"""What every command shares: the consoles, the model flags, the Toolkit, JSON output, spinners.

Data goes to stdout (one JSON document with --json); progress, spinners, notes and
errors go to stderr.
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

from pipelines.backends.registry import REGISTRY
from pipelines.errors import UsageError
from pipelines.settings import Settings, host_field, load_settings, model_field

if TYPE_CHECKING:
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
    signature = inspect.signature(fn, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "settings"]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        flags = {p.name: kwargs.pop(p.name) for p in model_flags}
        return fn(*args, settings=settings_from_flags(flags), **kwargs)

    command.__signature__ = signature.replace(parameters=own + model_flags)  # type: ignore[attr-defined]
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
