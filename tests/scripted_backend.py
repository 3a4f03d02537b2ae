"""A backend for tests, registered the way any backend is (pipelines/backends/providers/):
its models are the test's scripted fakes, so the CLI, the web app and evals run end to end
on them with `--backend scripted` (or LLAMAPIPE_BACKEND=scripted), no monkeypatching."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.backends import REGISTRY, Backend, Choice, Provider, Registry

NAME = "scripted"


def scripted_provider(
    chat: Any, completion: Any = None, embeddings: Any = None, *, build: Callable | None = None
) -> Provider:
    """`chat` (and `completion`, by default the same model) as backend `scripted`; `build`
    replaces building altogether (e.g. to fail the test when a model is loaded)."""

    def _build(settings: Any, choice: Choice) -> Backend:
        return Backend(
            name=NAME,
            model=getattr(chat, "model_name", "scripted"),
            chat=chat,
            completion=completion if completion is not None else chat,
            embeddings=embeddings,
            reason=choice.reason,
        )

    return Provider(
        name=NAME,
        summary="'scripted' (the tests' fake models)",
        select=lambda settings, mode: Choice(True, "scripted for a test"),
        build=build or _build,
        owns=lambda model: (
            model.model_name if any(model is m for m in (chat, completion)) else None
        ),
    )


@contextmanager
def registered(provider: Provider, registry: Registry = REGISTRY) -> Iterator[Provider]:
    registry.register(provider)
    try:
        yield provider
    finally:
        registry.unregister(provider.name)
