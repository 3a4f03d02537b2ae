"""The Ollama backend: langchain-ollama models whose errors say what to do next."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama
from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM

from pipelines.errors import (
    BackendError,
    ConfigError,
    ModelTimeoutError,
    OllamaModelMissingError,
    OllamaResponseError,
    OllamaUnreachableError,
)

DEFAULT_PORT = 11434


def normalize_host(host: str) -> str:
    """`localhost`, `:8080`, `10.0.0.2`, `https://x` -> a full base URL, read as Ollama reads it.

    Without a scheme the port defaults to 11434; with one, to the scheme's own port.
    """
    host = host.strip() or "127.0.0.1"
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest, default_port = "http", host, DEFAULT_PORT
    else:
        default_port = 443 if scheme == "https" else 80
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(
            f"Ollama host {host!r} has an invalid port",
            hint="set OLLAMA_HOST or LLAMAPIPE_OLLAMA_HOST like 127.0.0.1:11434",
        ) from None
    hostname = parts.hostname or "127.0.0.1"
    if hostname in ("0.0.0.0", "::"):  # bind-all addresses: connect to this machine
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    return f"{scheme}://{hostname}:{port}{parts.path.rstrip('/')}"


def unreachable_error(host: str, detail: str = "") -> OllamaUnreachableError:
    suffix = f" ({detail})" if detail else ""
    return OllamaUnreachableError(
        f"cannot reach Ollama at {host}{suffix}",
        hint="start it with `ollama serve`, point OLLAMA_HOST at where it runs, "
        "or use `--backend embedded`",
    )


def missing_model_error(host: str, model: str, available: list[str]) -> OllamaModelMissingError:
    have = f"; it has: {', '.join(available)}" if available else "; it has no models yet"
    return OllamaModelMissingError(
        f"model '{model}' is not pulled on Ollama at {host}{have}",
        hint=f"run `ollama pull {model}`, or choose another with --model",
    )


@contextlib.contextmanager
def translate_errors(host: str, model: str, timeout: float) -> Iterator[None]:
    """Turn httpx and ollama-client exceptions into llamapipe errors with a next step."""
    try:
        yield
    except BackendError:
        raise
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise missing_model_error(host, model, []) from None
        raise OllamaResponseError(
            f"Ollama at {host} answered {exc.status_code}: {exc.error}",
            hint="read the Ollama server log (`journalctl -u ollama`, or the terminal "
            "running `ollama serve`)",
        ) from None
    except httpx.TimeoutException:
        raise ModelTimeoutError(
            f"Ollama at {host} did not answer within {timeout:g} s",
            hint="raise LLAMAPIPE_TIMEOUT (a large model can take minutes to load), "
            "or use a smaller model",
        ) from None
    except (httpx.ConnectError, ConnectionError) as exc:
        raise unreachable_error(host, _reason(exc)) from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise OllamaResponseError(
            f"the connection to Ollama at {host} broke off mid-answer ({exc})",
            hint="try again; if it repeats, read the Ollama server log",
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else text.split("\n")[0][:120]


class _Translated:
    """Mixin: the same models, but failures raise llamapipe errors (see translate_errors)."""

    base_url: str | None
    model: str

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        kwargs: dict[str, Any] = getattr(self, "client_kwargs", None) or {}
        return translate_errors(self.base_url or "", self.model, kwargs.get("timeout", 0.0))


class OllamaChat(_Translated, ChatOllama):
    """langchain-ollama's ChatOllama with errors that name the host and the fix."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._errors():
            yield from super()._stream(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return await super()._agenerate(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        with self._errors():
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk


class OllamaCompletion(_Translated, OllamaLLM):
    """langchain-ollama's OllamaLLM (`/api/generate`) with translated errors.

    Prompts go raw (`"raw": true`): completion-form templates are already the full
    text the model should continue, so Ollama must not wrap them in a chat template.
    """

    def _generate_params(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("raw", True)
        return super()._generate_params(prompt, stop, **kwargs)

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._errors():
            yield from super()._stream(*args, **kwargs)


class OllamaEmbed(_Translated, OllamaEmbeddings):
    """langchain-ollama's OllamaEmbeddings (`/api/embed`) with translated errors."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._errors():
            return super().embed_documents(texts)


@dataclass
class OllamaStatus:
    """What a quick look at an Ollama host found."""

    host: str
    reachable: bool
    version: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def model_names(self) -> list[str]:
        return [m["name"] for m in self.models]

    def has_model(self, name: str) -> bool:
        names = self.model_names
        return name in names or (":" not in name and f"{name}:latest" in names)


def probe(host: str, timeout: float) -> OllamaStatus:
    """Ask `/api/version` and `/api/tags` at `host`; never raises for a missing server."""
    try:
        with httpx.Client(base_url=host, timeout=timeout) as client:
            version = client.get("/api/version").raise_for_status().json().get("version")
            models = ollama.Client(host=host, timeout=timeout).list().models
    except (httpx.HTTPError, ConnectionError, ollama.ResponseError, ValueError) as exc:
        return OllamaStatus(host=host, reachable=False, error=_reason(exc))
    return OllamaStatus(
        host=host,
        reachable=True,
        version=version,
        models=[
            {
                "name": m.model,
                "size_bytes": m.size,
                "family": m.details.family if m.details else None,
                "parameter_size": m.details.parameter_size if m.details else None,
                "quantization": m.details.quantization_level if m.details else None,
            }
            for m in models
        ],
    )
