"""A quick look at an Ollama host, and the errors that say what to do next.

Apart from pipelines/backends/ollama.py (the models) so that `models`, `auto` and the
provider's `select` need neither langchain nor the ollama client: a host that refuses the
connection is answered in milliseconds, with nothing heavy imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from pipelines.backends.address import parse_address, quick_client
from pipelines.errors import OllamaModelMissingError, OllamaUnreachableError

DEFAULT_PORT = 11434


def normalize_host(host: str) -> str:
    """`localhost`, `:8080`, `10.0.0.2`, `https://x` -> a full base URL, read as Ollama reads it.

    Without a scheme the port defaults to 11434; with one, to the scheme's own port.
    """
    address = parse_address(
        host, what="Ollama host", example="127.0.0.1:11434 (OLLAMA_HOST or LLAMAPIPE_OLLAMA_HOST)"
    )
    if not address.had_scheme:
        return address.url(DEFAULT_PORT)
    return address.url(443 if address.scheme == "https" else 80)


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


def reason(exc: BaseException) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else text.split("\n")[0][:120]


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
        with quick_client(host, timeout, base_url=host) as client:
            version = client.get("/api/version").raise_for_status().json().get("version")
    except (httpx.HTTPError, ConnectionError, ValueError) as exc:
        return OllamaStatus(host=host, reachable=False, error=reason(exc))
    import ollama  # only for a host that answered (~50 ms to import)

    try:
        with ollama.Client(host=host, timeout=timeout) as tags:
            models = tags.list().models
    except (httpx.HTTPError, ConnectionError, ollama.ResponseError, ValueError) as exc:
        return OllamaStatus(host=host, reachable=False, error=reason(exc))
    return OllamaStatus(
        host=host,
        reachable=True,
        version=version,
        models=[
            {
                "name": m.model,
                "digest": m.digest,
                "size_bytes": m.size,
                "family": m.details.family if m.details else None,
                "parameter_size": m.details.parameter_size if m.details else None,
                "quantization": m.details.quantization_level if m.details else None,
            }
            for m in models
        ],
    )
