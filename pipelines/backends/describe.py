"""What a langchain-core model is (backend, name), and a copy of it with other sampling."""

from __future__ import annotations

from typing import Any


def describe_model(model: Any) -> tuple[str, str]:
    """(backend, model name) for results: the backend that built it (each says which
    models are its own), or the class name."""
    from pipelines.backends.registry import REGISTRY

    known = REGISTRY.describe(model)
    if known is not None:
        return known
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return type(model).__name__, str(name or type(model).__name__)


def with_sampling(model: Any, *, temperature: float | None, seed: int | None) -> Any:
    """`model` with this temperature and seed, where it has such settings; else `model`."""
    fields = getattr(type(model), "model_fields", {})
    update = {
        name: value
        for name, value in (("temperature", temperature), ("seed", seed))
        if value is not None and name in fields
    }
    return model.model_copy(update=update) if update else model
