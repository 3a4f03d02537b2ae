"""What a backend is to the rest of llamapipe: one `Provider`, declared in one module.

A provider names itself (a built-in one as its module in providers/ is named), brings its
own settings model (its fields become flat settings, `<name>_<field>`, so `ollama_host` and
`LLAMAPIPE_OLLAMA_HOST` are Ollama's `host`), says whether it can serve (`select`), builds
the models (`build`), finds an embeddings model for dense retrieval (`embeddings`), its
default number of calls at once, and how it describes itself in `llamapipe models`.
`registry.py` holds the providers; nothing else in the project compares backend names.

This module imports no pydantic (a settings model is the provider's own), so the registry
can list the backends for `--help` at the cost of a few dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel, BaseLLM
    from pydantic import BaseModel

    from pipelines.settings import Settings

TOKEN_RATES_FILE = "token-rates.json"  # in cache_dir: measured tokens per character, per model

Mode = Literal["asked", "auto"]  # the user named this backend, or `auto` is trying it
Found = tuple["Embeddings | None", str, str]  # (embeddings or None, model name, why)


@dataclass(frozen=True)
class Backend:
    """A ready-to-use model: chat and completion forms, and embeddings when there are any."""

    name: str
    model: str
    chat: BaseChatModel
    completion: BaseLLM
    embeddings: Embeddings | None
    reason: str
    gguf: Path | None = None
    warm_up: Callable[[], object] | None = None  # loads weights (in-process backends only)

    def warm(self) -> None:
        """Load the weights now, so the first call is not the slow one."""
        if self.warm_up is not None:
            self.warm_up()


@dataclass(frozen=True)
class Choice:
    """Whether a provider can serve these settings, why (in words), and what it found."""

    usable: bool
    reason: str
    found: Any = None  # what probing found, handed on to `build`


@dataclass(frozen=True)
class Provider:
    """One backend. Only `name`, `summary`, `select` and `build` are required."""

    name: str
    summary: str  # one clause for the `backend` setting's help
    # (settings, mode) -> Choice. Asked for, it raises the error that says what to do
    # rather than return an unusable choice; in `auto` it may also raise, when the user
    # named this provider's model or server, so that no other model answers instead.
    select: Callable[[Settings, Mode], Choice]
    build: Callable[[Settings, Choice], Backend]
    settings: type[BaseModel] | None = None  # a pydantic model of its own settings, if any
    prefix: str | None = None  # of its flat settings; None: "<name>_"
    env_aliases: dict[str, str] = field(default_factory=dict)  # setting -> another tool's var
    model_setting: str | None = None  # what `--model` (an eval system's `model:`) sets
    host_setting: str | None = None  # what `--host` sets
    concurrency: int = 1  # calls at once by default (evals, `pal run`)
    auto: bool = False  # whether `auto` tries it (in registration order)
    embeddings: Callable[[Settings], Found] | None = None
    owns: Callable[[Any], str | None] | None = None  # a model it built -> the model's name
    inventory: Callable[[Settings], dict[str, Any]] | None = None  # for `llamapipe models`
    lines: Callable[[dict[str, Any]], list[Any]] | None = None  # that, as rich renderables
    # (settings, a backend it built) -> what pins the model down beyond its name, for eval
    # runs: Ollama's digest, the GGUF file's sha256, the served model id...
    identity: Callable[[Settings, Backend], dict[str, Any]] | None = None
    # What its settings left empty stand for: {field: (the value used, where it comes from)},
    # so `llamapipe config` shows the file in use rather than null.
    defaults: Callable[[Settings], dict[str, tuple[Any, str]]] | None = None
    # The environment variables holding secrets it reads (an API key): never written into a
    # schedule, which must read them from a file of the user's at run time.
    secrets: Callable[[Settings], list[str]] | None = None

    def setting(self, name: str) -> str:
        """The flat setting of this provider's field `name`."""
        return f"{self.name}_{name}" if self.prefix is None else f"{self.prefix}{name}"

    def setting_names(self) -> list[str]:
        return [self.setting(n) for n in self.own_fields()]

    def own_fields(self) -> dict[str, Any]:
        """Its settings model's fields (name: pydantic FieldInfo); {} without one."""
        return dict(self.settings.model_fields) if self.settings is not None else {}

    def read(self, settings: Settings) -> Any:
        """This provider's own settings model, filled from the flat settings."""
        if self.settings is None:
            return None
        return self.settings.model_validate(
            {n: getattr(settings, self.setting(n)) for n in self.own_fields()}
        )
