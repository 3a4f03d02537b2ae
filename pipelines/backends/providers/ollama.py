"""Ollama: a local or remote Ollama server (langchain-ollama models: ../ollama.py; the quick
look at a host, which imports neither: ../ollama_probe.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipelines.backends.provider import TOKEN_RATES_FILE, Backend, Choice, Found, Mode, Provider

if TYPE_CHECKING:
    from pipelines.backends.ollama_probe import OllamaStatus
    from pipelines.settings import Settings


NAME = __name__.rpartition(".")[2]  # the backend is named as its module (see __init__.py)


class OllamaSettings(BaseModel):
    host: str = Field(
        "http://127.0.0.1:11434", description="Ollama server address; OLLAMA_HOST is honoured too."
    )
    model: str = Field(
        "llama3.1:8b", description="Ollama chat model tag (pull it with `ollama pull`)."
    )
    embed_model: str = Field(
        "bge-m3", description="Ollama embedding model, used for dense retrieval when present."
    )


Probe = Callable[[str, float], "OllamaStatus"]  # (host, timeout) -> what the host said


def _probe(host: str, timeout: float) -> OllamaStatus:
    from pipelines.backends.ollama_probe import probe

    return probe(host, timeout)


def _status(settings: Settings, timeout: float, probe: Probe) -> OllamaStatus:
    from pipelines.backends.ollama_probe import normalize_host

    return probe(normalize_host(settings.ollama_host), timeout)


def select(settings: Settings, mode: Mode, probe: Probe = _probe) -> Choice:
    from pipelines.backends.ollama_probe import missing_model_error, unreachable_error

    timeout = settings.probe_timeout if mode == "auto" else settings.timeout
    status = _status(settings, timeout, probe)
    host, model = status.host, settings.ollama_model
    if status.reachable and status.has_model(model):
        how = "asked for Ollama; " if mode == "asked" else "Ollama at "
        tail = f"{host} has {model}" if mode == "asked" else f"{host} is running and has {model}"
        return Choice(True, how + tail, status)
    named = [f for f in ("ollama_model", "ollama_host") if settings.origin(f) != "default"]
    if mode == "asked" or named:  # the user asked for this model or server: never another
        if not status.reachable:
            raise unreachable_error(host, status.error or "")
        missing = missing_model_error(host, model, status.model_names)
        if mode == "auto":
            missing.hint = f"{missing.hint}, or use `--backend embedded`"
        raise missing
    if status.reachable:
        return Choice(False, f"Ollama at {host} has no {model} (`ollama pull {model}` to use it)")
    return Choice(False, f"no Ollama at {host} ({status.error})")


def build(settings: Settings, choice: Choice) -> Backend:
    from pipelines.backends.ollama import OllamaChat, OllamaCompletion, OllamaEmbed
    from pipelines.backends.ollama_probe import normalize_host

    host = normalize_host(settings.ollama_host)
    options: dict[str, Any] = {
        "base_url": host,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "num_predict": settings.max_tokens,
        "num_ctx": settings.num_ctx,
        "stop": settings.stop or None,
        "client_kwargs": {"timeout": settings.timeout},
        "token_cache": settings.cache_dir / TOKEN_RATES_FILE,
        "retries": settings.retries,
    }
    status = choice.found
    embeddings = None
    if status is not None and status.has_model(settings.ollama_embed_model):
        embeddings = OllamaEmbed(
            model=settings.ollama_embed_model,
            base_url=host,
            client_kwargs={"timeout": settings.timeout},
        )
    return Backend(
        name=NAME,
        model=settings.ollama_model,
        chat=OllamaChat(model=settings.ollama_model, **options),
        completion=OllamaCompletion(model=settings.ollama_model, **options),
        embeddings=embeddings,
        reason=choice.reason,
    )


def embeddings(settings: Settings, probe: Probe = _probe) -> Found:
    from pipelines.backends.ollama import OllamaEmbed

    status = _status(settings, settings.probe_timeout, probe)
    name, host = settings.ollama_embed_model, status.host
    if status.reachable and status.has_model(name):
        embed = OllamaEmbed(model=name, base_url=host, client_kwargs={"timeout": settings.timeout})
        return embed, name, f"{name} via Ollama at {host}"
    if settings.backend == NAME or status.reachable:
        return (
            None,
            "",
            f"Ollama at {host} has no {name} (`ollama pull {name}` to add dense retrieval)",
        )
    return None, "", f"no Ollama at {host}"


def owns(model: Any) -> str | None:
    module = type(model).__module__
    if module.startswith("langchain_ollama") or type(model).__name__.startswith("Ollama"):
        return str(getattr(model, "model", "?"))
    return None


def identity(settings: Settings, backend: Backend, probe: Probe = _probe) -> dict[str, Any]:
    """The host and the model's digest from /api/tags (a re-pulled tag has another)."""
    status = _status(settings, settings.probe_timeout, probe)
    names = {backend.model, f"{backend.model}:latest"}
    found = next((m for m in status.models if m["name"] in names), {})
    return {"host": status.host, "digest": found.get("digest")}


def inventory(settings: Settings, probe: Probe = _probe) -> dict[str, Any]:
    status = _status(settings, settings.probe_timeout, probe)
    return {
        "host": status.host,
        "reachable": status.reachable,
        "version": status.version,
        "error": status.error,
        "model": settings.ollama_model,
        "has_model": status.has_model(settings.ollama_model),
        "models": status.models,
    }


def lines(doc: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    if not doc["reachable"]:
        return [f"[b]ollama[/b]   {doc['host']}  [red]not reachable[/red] ({doc['error']})"]
    head = f"[b]ollama[/b]   {doc['host']}  [green]reachable[/green] (version {doc['version']})"
    table = Table("model", "size", "family", "parameters", "quantization", header_style="bold")
    for m in doc["models"]:
        size = f"{(m['size_bytes'] or 0) / 1e9:.1f} GB"
        table.add_row(
            m["name"], size, m["family"] or "", m["parameter_size"] or "", m["quantization"] or ""
        )
    return [head, table if doc["models"] else "  no models pulled yet"]


def provider(probe: Probe = _probe) -> Provider:
    """Ollama's provider; tests pass a `probe` that answers for a server."""
    return Provider(
        name=NAME,
        summary="'ollama' (an Ollama server)",
        select=functools.partial(select, probe=probe),
        build=build,
        settings=OllamaSettings,
        env_aliases={"ollama_host": "OLLAMA_HOST"},
        model_setting="ollama_model",
        host_setting="ollama_host",
        concurrency=4,  # Ollama serves OLLAMA_NUM_PARALLEL at once; set it to match
        auto=True,
        embeddings=functools.partial(embeddings, probe=probe),
        owns=owns,
        inventory=functools.partial(inventory, probe=probe),
        lines=lines,
        identity=functools.partial(identity, probe=probe),
    )


PROVIDER = provider()
