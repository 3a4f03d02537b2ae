"""An OpenAI-compatible server: vLLM, llama-server, llama-cpp-python's server...
(langchain-openai models, pipelines/backends/openai_compat.py). Only when asked for:
`auto` never picks it. langchain-openai costs ~0.4 s to import, so only then: looking at a
server (`models`, the checks in `select`) needs only ../openai_probe.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipelines.backends.provider import TOKEN_RATES_FILE, Backend, Choice, Found, Mode, Provider

if TYPE_CHECKING:
    from pipelines.backends.openai_compat import OpenAIEmbed
    from pipelines.backends.openai_probe import ServerStatus
    from pipelines.settings import Settings


NAME = __name__.rpartition(".")[2]  # the backend is named as its module (see __init__.py)


class OpenAISettings(BaseModel):
    base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="OpenAI-compatible server's API address; OPENAI_BASE_URL is honoured too. "
        "An address without a path gets /v1.",
    )
    model: str = Field(
        "", description="Model id on the OpenAI-compatible server; empty means the first it lists."
    )
    embed_model: str = Field(
        "",
        description="Embedding model id on the OpenAI-compatible server (/v1/embeddings), for "
        "dense retrieval; empty means BM25 only.",
    )
    embed_base_url: str = Field(
        "",
        description="Where openai_embed_model is served, when not on openai_base_url (vLLM "
        "serves one model per process); empty means openai_base_url.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the server's API key (the key "
        "itself is never stored in settings or printed); unset means no key.",
    )


def select(settings: Settings, mode: Mode) -> Choice:
    """Checked once here (reachable, key accepted, model served), so a wrong setting fails
    before any work, saying what to do."""
    from pipelines.backends.openai_probe import (
        api_key,
        normalize_base_url,
        probe_server,
        unknown_model_error,
    )

    base_url = normalize_base_url(settings.openai_base_url)
    status = probe_server(base_url, api_key(settings.openai_api_key_env), settings.timeout)
    status.raise_for_use(settings.openai_api_key_env)
    served = status.model_names
    model = settings.openai_model or next(iter(served), "")
    if not model:
        raise unknown_model_error(base_url, "any model", [])
    if not status.has_model(model):
        raise unknown_model_error(base_url, model, served)
    why = "asked for" if settings.openai_model else "the first model"
    reason = f"OpenAI-compatible server at {base_url} serves {model} ({why})"
    return Choice(True, reason, (status, model))


def build(settings: Settings, choice: Choice) -> Backend:
    from pipelines.backends.openai_compat import NO_KEY, OpenAIChat, OpenAICompletion
    from pipelines.backends.openai_probe import api_key

    status, model = choice.found
    key = api_key(settings.openai_api_key_env)
    common: dict[str, Any] = {
        "model": model,
        "base_url": status.base_url,
        "api_key": key or NO_KEY,
        "key_env": settings.openai_api_key_env,
        "timeout": settings.timeout,
        "max_retries": settings.retries,  # the openai client's backoff: 408/409/429/5xx, resets
        "token_cache": settings.cache_dir / TOKEN_RATES_FILE,
    }
    sampling: dict[str, Any] = {
        "temperature": settings.temperature,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "num_ctx": settings.num_ctx,
        "server_window": status.window(model),
    }
    stop = settings.stop or None
    embeddings = None
    if settings.openai_embed_model:
        embeddings = _embeddings(settings, status)
    return Backend(
        name=NAME,
        model=model,
        chat=OpenAIChat(**common, **sampling, stop_sequences=stop),
        completion=OpenAICompletion(
            **common, **sampling, model_kwargs={"stop": stop} if stop else {}
        ),
        embeddings=embeddings,
        reason=choice.reason,
    )


def _embeddings(settings: Settings, status: ServerStatus) -> OpenAIEmbed:
    """`openai_embed_model`, on `openai_embed_base_url` when set (vLLM serves one model per
    process), else on the chat model's server (`status` is what probing that one found)."""
    from pydantic import SecretStr

    from pipelines.backends.openai_compat import NO_KEY, OpenAIEmbed
    from pipelines.backends.openai_probe import (
        api_key,
        normalize_base_url,
        probe_server,
        unknown_model_error,
    )

    name, key = settings.openai_embed_model, api_key(settings.openai_api_key_env)
    base_url = status.base_url
    if settings.openai_embed_base_url:
        base_url = normalize_base_url(settings.openai_embed_base_url)
        status = probe_server(base_url, key, settings.timeout)
        status.raise_for_use(settings.openai_api_key_env)
    if not status.has_model(name):
        raise unknown_model_error(base_url, name, status.model_names)
    return OpenAIEmbed(
        model=name,
        base_url=base_url,
        api_key=SecretStr(key or NO_KEY),
        key_env=settings.openai_api_key_env,
        timeout=settings.timeout,
        max_retries=settings.retries,
    )


def embeddings(settings: Settings) -> Found:
    from pipelines.backends.openai_probe import api_key, normalize_base_url, probe_server

    if not settings.openai_embed_model:
        return None, "", "no openai_embed_model set"
    base_url = normalize_base_url(settings.openai_embed_base_url or settings.openai_base_url)
    status = probe_server(base_url, api_key(settings.openai_api_key_env), settings.timeout)
    status.raise_for_use(settings.openai_api_key_env)
    embed = _embeddings(settings, status)
    where = embed.openai_api_base
    return embed, embed.model, f"{embed.model} via the OpenAI-compatible server at {where}"


def owns(model: Any) -> str | None:
    if type(model).__module__ == "pipelines.backends.openai_compat":
        return str(getattr(model, "model_name", "?"))
    return None


def identity(settings: Settings, backend: Backend) -> dict[str, Any]:
    """The served model id (as the server listed it) and where it is served."""
    from pipelines.backends.openai_probe import normalize_base_url

    return {"served_model": backend.model, "base_url": normalize_base_url(settings.openai_base_url)}


def inventory(settings: Settings) -> dict[str, Any]:
    """What the server at `openai_base_url` serves (never the key)."""
    from pipelines.backends.openai_probe import api_key, normalize_base_url, probe_server

    base_url = normalize_base_url(settings.openai_base_url)
    timeout = settings.timeout if settings.backend == NAME else settings.probe_timeout
    status = probe_server(base_url, api_key(settings.openai_api_key_env), timeout)
    model = settings.openai_model or next(iter(status.model_names), "")
    return {
        "base_url": base_url,
        "configured": settings.backend == NAME or settings.origin("openai_base_url") != "default",
        "reachable": status.reachable,
        "error": status.error,
        "api_key_env": settings.openai_api_key_env,
        "api_key_set": api_key(settings.openai_api_key_env) is not None,
        "model": model,
        "has_model": status.has_model(model),
        "models": status.models,
    }


def lines(doc: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    if doc["reachable"] and not doc["error"]:
        table = Table("model", "context", "owned by", header_style="bold")
        for m in doc["models"]:
            table.add_row(m["id"], str(m["max_model_len"] or ""), m["owned_by"] or "")
        head = f"[b]openai[/b]   {doc['base_url']}  [green]reachable[/green]"
        return [head, table if doc["models"] else "  serves no models"]
    if doc["configured"] or doc["reachable"]:
        key = "" if doc["api_key_set"] else f", ${doc['api_key_env']} not set"
        return [f"[b]openai[/b]   {doc['base_url']}  [red]not usable[/red] ({doc['error']}{key})"]
    return []


PROVIDER = Provider(
    name=NAME,
    summary="'openai' (an OpenAI-compatible server: vLLM, llama-server...)",
    select=select,
    build=build,
    settings=OpenAISettings,
    env_aliases={"openai_base_url": "OPENAI_BASE_URL"},
    model_setting="openai_model",
    host_setting="openai_base_url",
    concurrency=8,  # vLLM and llama-server batch calls continuously
    embeddings=embeddings,
    owns=owns,
    inventory=inventory,
    lines=lines,
    identity=identity,
    secrets=lambda settings: [settings.openai_api_key_env],
)
