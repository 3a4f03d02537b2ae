"""What a langchain-core model is (backend, name), and a copy of it with other sampling."""

from __future__ import annotations

from typing import Any


def describe_model(model: Any) -> tuple[str, str]:
    """(backend, model name) for results: 'ollama', 'embedded', 'openai', or the class name."""
    from pipelines.backends.embedded import EmbeddedChatModel, EmbeddedLLM

    if isinstance(model, EmbeddedChatModel | EmbeddedLLM):
        return "embedded", model.model_name
    module = type(model).__module__
    if module.endswith("openai_compat"):
        return "openai", str(getattr(model, "model_name", "?"))
    if module.startswith("langchain_ollama") or type(model).__name__.startswith("Ollama"):
        return "ollama", str(getattr(model, "model", "?"))
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
