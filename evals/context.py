"""What every eval task runs with: the run's context (spec, settings, cache, backends),
the backend each system asks for, how many calls go at once, and the progress line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from evals.cache import OutputCache
from pipelines.errors import UsageError, first_problem
from pipelines.pool import default_concurrency
from pipelines.settings import model_field

if TYPE_CHECKING:
    from evals.spec import EvalSpec, SystemSpec
    from pipelines.settings import Settings

ModelFactory = Callable[["Settings"], Any]  # settings -> Backend (name, model, chat)


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


@dataclass
class RunContext:
    spec: EvalSpec
    settings: Settings
    cache: OutputCache
    backend_factory: ModelFactory
    backends: dict[str, Any] = field(default_factory=dict)


def concurrency_for(ctx: RunContext, system: SystemSpec, backend: Any) -> int:
    """Calls at once: the system's, else the spec's, else the setting, else per backend."""
    chosen = system.concurrency or ctx.spec.concurrency or ctx.settings.concurrency
    return chosen or default_concurrency(backend.name)


def backend_for(ctx: RunContext, system: SystemSpec) -> Any:
    overrides: dict[str, Any] = {k: v for k, v in system.params.items() if v is not None}
    if system.backend:
        overrides["backend"] = system.backend
    if system.model:
        backend = system.backend or ctx.settings.backend
        named = model_field(backend)  # Ollama's tag, a GGUF path, a served model's id...
        if named is None:
            raise UsageError(
                f"system {system.name}: backend {backend} takes no `model`",
                hint="leave `model:` out, or name another backend",
            )
        overrides[named] = system.model
    settings = _with(ctx.settings, overrides, system.name) if overrides else ctx.settings
    key = settings.model_dump_json()
    if key not in ctx.backends:
        ctx.backends[key] = (ctx.backend_factory(settings), settings)
    return ctx.backends[key]


def _with(settings: Settings, overrides: dict[str, Any], system: str) -> Settings:
    try:
        return type(settings).model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        where, message, _ = first_problem(exc)
        raise UsageError(
            f"system {system}: params.{where}: {message}",
            hint="params take settings fields: temperature, seed, max_tokens, num_ctx, stop",
        ) from None
