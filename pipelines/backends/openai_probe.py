"""A quick look at an OpenAI-compatible server (`/v1/models`), and the errors that say what
to do next.

Apart from pipelines/backends/openai_compat.py (the models, on langchain-openai, ~0.4 s to
import) so that `models` and the provider's checks import only httpx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.backends.address import parse_address, quick_client
from pipelines.errors import (
    ModelMissingError,
    ServerAuthError,
    ServerResponseError,
    ServerUnreachableError,
)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
START_HINT = (
    "start it (vLLM: `vllm serve MODEL`; llama.cpp: `llama-server -m MODEL.gguf --port 8000`), "
    "or point --host (LLAMAPIPE_OPENAI_BASE_URL) at where it runs"
)


def normalize_base_url(url: str) -> str:
    """`localhost:8000`, `http://gpu:8000`, `http://gpu:8000/v1/` -> `http://gpu:8000/v1`.

    Without a scheme, http; without a path, `/v1` (every OpenAI-compatible server serves
    the API there); a path given is kept, for servers mounted elsewhere.
    """
    address = parse_address(
        url or "127.0.0.1:8000",
        what="OpenAI-compatible base URL",
        example="http://127.0.0.1:8000/v1 (--host or LLAMAPIPE_OPENAI_BASE_URL)",
    )
    return address.url(path=address.path or "/v1")


def api_key(key_env: str) -> str | None:
    """The key in `$key_env`, or None when the variable is unset or empty."""
    return os.environ.get(key_env, "").strip() or None


# -- errors that say what to do next -------------------------------------------------------


def unreachable_error(base_url: str, detail: str = "") -> ServerUnreachableError:
    suffix = f" ({detail})" if detail else ""
    return ServerUnreachableError(
        f"cannot reach an OpenAI-compatible server at {base_url}{suffix}", hint=START_HINT
    )


def not_an_api_error(base_url: str, status: int) -> ServerResponseError:
    parts = urlsplit(base_url)
    return ServerResponseError(
        f"{base_url}/models answered {status}: no OpenAI-compatible API at that base URL",
        hint=f"the base URL is usually the server's address plus /v1 "
        f"({parts.scheme}://{parts.netloc}/v1); check --host or LLAMAPIPE_OPENAI_BASE_URL",
    )


def auth_error(base_url: str, key_env: str, status: int = 401) -> ServerAuthError:
    if api_key(key_env) is None:
        what, hint = (
            f"the server at {base_url} wants an API key ({status}), and ${key_env} is not set",
            f"export {key_env}=<the server's key> (vLLM and llama-server take it as --api-key)",
        )
    else:
        what, hint = (
            f"the server at {base_url} refused the API key in ${key_env} ({status})",
            f"put the key the server was started with in ${key_env}, or name another variable "
            "with LLAMAPIPE_OPENAI_API_KEY_ENV",
        )
    return ServerAuthError(what, hint=hint)


def unknown_model_error(base_url: str, model: str, served: list[str]) -> ModelMissingError:
    if not served:
        return ModelMissingError(
            f"the server at {base_url} does not serve '{model}'",
            hint="`llamapipe models` lists what it serves; choose one with --model "
            "(LLAMAPIPE_OPENAI_MODEL)",
        )
    return ModelMissingError(
        f"the server at {base_url} does not serve '{model}'; it serves: {', '.join(served)}",
        hint="choose one with --model (LLAMAPIPE_OPENAI_MODEL), or start the server with "
        f"'{model}'",
    )


def reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:  # the openai client wraps the socket error; say what it was
        if "refused" in str(cause).lower():
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return str(exc).split("\n")[0][:120]


@dataclass
class ServerStatus:
    """What a quick look at `/v1/models` found. Never holds the key."""

    base_url: str
    reachable: bool
    models: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    status_code: int | None = None  # of a failed /models request

    @property
    def model_names(self) -> list[str]:
        return [m["id"] for m in self.models]

    def has_model(self, name: str) -> bool:
        return name in self.model_names

    def window(self, name: str) -> int | None:
        """The model's context window, when the server says (vLLM's `max_model_len`)."""
        for m in self.models:
            if m["id"] == name and m.get("max_model_len"):
                return int(m["max_model_len"])
        return None

    def raise_for_use(self, key_env: str) -> None:
        """Raise the error that says what to do, unless the server is usable."""
        if not self.reachable:
            raise unreachable_error(self.base_url, self.error or "")
        if self.status_code in (401, 403):
            raise auth_error(self.base_url, key_env, self.status_code)
        if self.status_code == 404:
            raise not_an_api_error(self.base_url, 404)
        if self.error:
            raise ServerResponseError(
                f"the server at {self.base_url} gave no model list: {self.error}",
                hint="check that --host (LLAMAPIPE_OPENAI_BASE_URL) is an OpenAI-compatible API",
            )


def probe_server(base_url: str, key: str | None, timeout: float) -> ServerStatus:
    """GET `{base_url}/models`; never raises for a missing or refusing server."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with quick_client(base_url, timeout) as client:
            response = client.get(f"{base_url}/models", headers=headers)
    except httpx.HTTPError as exc:
        return ServerStatus(base_url, reachable=False, error=reason(exc))
    if response.status_code != 200:
        return ServerStatus(
            base_url, reachable=True, error=f"HTTP {response.status_code}",
            status_code=response.status_code,
        )  # fmt: skip
    try:
        data = response.json()["data"]
        models = [
            {
                "id": str(m["id"]),
                "owned_by": m.get("owned_by"),
                "max_model_len": m.get("max_model_len"),
            }
            for m in data
        ]
    except (ValueError, KeyError, TypeError):
        return ServerStatus(base_url, reachable=True, error="the answer is not a model list")
    return ServerStatus(base_url, reachable=True, models=models)
