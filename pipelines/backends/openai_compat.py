"""The OpenAI-compatible backend: vLLM, llama.cpp's `llama-server`, llama-cpp-python's server,
TGI, SGLang, LM Studio, or Ollama's own `/v1`: anything that serves `/v1/chat/completions`.

langchain-openai's models, with what llamapipe's other backends give too: errors that name the
fix (a base URL without its `/v1`, a refused key, a model the server does not serve), a known
context window, and token counts that never reach tiktoken. tiktoken downloads its encodings
on first use (so it fails offline) and they are OpenAI's tokenizers, not Llama's. Instead the
model's tokens per character are measured on the server once (`usage.prompt_tokens` of four
one-token completions, see served_tokens) and kept in the cache dir; a server without
`/v1/completions` gets the budget's conservative estimate. Servers refuse an over-long prompt
with a 400 rather than cutting it, and that refusal becomes a ContextOverflowError.

The API key is read from the environment variable the settings name (OPENAI_API_KEY by
default) and is never printed: messages name the variable, not its value.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from langchain_openai import OpenAI, OpenAIEmbeddings
from langchain_openai.chat_models.base import BaseChatOpenAI

from pipelines.backends.openai_probe import (
    DEFAULT_KEY_ENV,
    api_key,
    auth_error,
    not_an_api_error,
    reason,
    unknown_model_error,
    unreachable_error,
)
from pipelines.backends.served_tokens import ServedTokens, tokens_for
from pipelines.errors import (
    BackendError,
    ContextOverflowError,
    ModelTimeoutError,
    ServerResponseError,
    StructuredOutputUnsupportedError,
)

NO_KEY = "EMPTY"  # what vLLM's docs send to a server started without --api-key


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        if text:
            return str(text)
    return exc.message


def _structured_refusal(base_url: str, exc: openai.APIStatusError) -> BackendError | None:
    """The error for a server that refused a `response_format` (structured output), if
    that is what it refused: vLLM and llama-server take a json_schema, others answer 400,
    422 or (llama-cpp-python's server) 500 naming the field."""
    text = _message(exc)
    if "response_format" not in text and "json_schema" not in text:
        return None
    return StructuredOutputUnsupportedError(
        f"the server at {base_url} does not take this response_format ({exc.status_code}: "
        f"{text.splitlines()[0][:200]})",
        hint='use with_structured_output(..., method="json_mode") (any JSON object; say the '
        "keys in the prompt), or a server with guided decoding for JSON schemas (vLLM, "
        "llama.cpp's llama-server); llama-cpp-python's server takes "
        'response_format={"type": "json_object", "schema": {...}}',
    )


@contextlib.contextmanager
def translate_errors(base_url: str, model: str, key_env: str, timeout: float) -> Iterator[None]:
    """Turn openai-client and httpx exceptions into llamapipe errors with a next step."""
    try:
        yield
    except BackendError:
        raise
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise auth_error(base_url, key_env, exc.status_code) from None
    except openai.NotFoundError as exc:
        text = _message(exc)
        if "model" in text.lower():  # vLLM: "The model `x` does not exist."
            raise unknown_model_error(base_url, model, []) from None
        raise not_an_api_error(base_url, 404) from None
    except openai.BadRequestError as exc:
        text = _message(exc)
        refusal = _structured_refusal(base_url, exc)
        if refusal is not None:
            raise refusal from None
        if any(word in text.lower() for word in ("context", "maximum", "too long", "exceed")):
            raise ContextOverflowError(
                f"the server at {base_url} refused the prompt: {text}",
                hint="shorten the input or lower --max-tokens; the window is the server's "
                "(vLLM: --max-model-len; llama-server: --ctx-size)",
            ) from None
        raise ServerResponseError(
            f"the server at {base_url} refused the request (400): {text}",
            hint="read the server's log; llamapipe sends standard chat-completion fields",
        ) from None
    except openai.APITimeoutError:
        raise ModelTimeoutError(
            f"the server at {base_url} did not answer within {timeout:g} s",
            hint="raise LLAMAPIPE_TIMEOUT, or lower --concurrency if the server is overloaded",
        ) from None
    except (openai.APIConnectionError, httpx.ConnectError, ConnectionError) as exc:
        raise unreachable_error(base_url, reason(exc)) from None
    except openai.APIStatusError as exc:
        refusal = _structured_refusal(base_url, exc)
        if refusal is not None:
            raise refusal from None
        raise ServerResponseError(
            f"the server at {base_url} answered {exc.status_code}: {_message(exc)}",
            hint="read the server's log",
        ) from None
    except (openai.APIError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise ServerResponseError(
            f"the connection to {base_url} broke off mid-answer ({exc})",
            hint="try again; if it repeats, read the server's log",
        ) from None


# -- the models ---------------------------------------------------------------------------


class OpenAITokens(ServedTokens):
    """Counts for a model on an OpenAI-compatible server: `usage.prompt_tokens` of raw
    `/v1/completions` (no chat template), keyed by model id and base URL."""

    def _read_identity(self, client: httpx.Client) -> None:
        listed = client.get("models").raise_for_status().json().get("data", [])
        entry: dict[str, Any] = next((m for m in listed if m.get("id") == self.model), {})
        length = entry.get("max_model_len")
        self._model_max = int(length) if length else None
        self._key = f"{self.model}@{self.host}"

    def _read_count(self, client: httpx.Client, text: str) -> int:
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0}
        answer = client.post("completions", json=body).raise_for_status().json()
        count = (answer.get("usage") or {}).get("prompt_tokens")
        if not isinstance(count, int) or count <= 0:
            raise ValueError("the server gave no usage.prompt_tokens")
        return count


class _Served:
    """Mixin: a known window, calibrated token counts, and translated errors."""

    exact_token_counts: ClassVar[bool] = False
    num_ctx: int
    server_window: int | None
    key_env: str
    token_cache: Path | None
    openai_api_base: str | None
    request_timeout: Any

    def _model_id(self) -> str:
        return str(getattr(self, "model_name", None) or getattr(self, "model", ""))

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        timeout = self.request_timeout if isinstance(self.request_timeout, int | float) else 0
        return translate_errors(
            self.openai_api_base or "", self._model_id(), self.key_env, float(timeout or 0)
        )

    # Each call runs inside _errors(); these sit before the langchain-openai class in the
    # MRO, so super() reaches its methods.
    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return super()._generate(*args, **kwargs)  # type: ignore[misc]

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._errors():
            yield from self._nonempty(super()._stream(*args, **kwargs))  # type: ignore[misc]

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return await super()._agenerate(*args, **kwargs)  # type: ignore[misc]

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        with self._errors():
            empty = True
            async for chunk in super()._astream(*args, **kwargs):  # type: ignore[misc]
                empty = False
                yield chunk
            if empty:
                raise self._empty_stream()

    def _nonempty(self, chunks: Iterator[Any]) -> Iterator[Any]:
        empty = True
        for chunk in chunks:
            empty = False
            yield chunk
        if empty:
            raise self._empty_stream()

    def _empty_stream(self) -> ServerResponseError:
        # llama-cpp-python's server answers 200 and then an empty stream when the prompt
        # does not fit its window; the reason is only in its log.
        return ServerResponseError(
            f"the server at {self.openai_api_base} ended the stream without a word",
            hint="the prompt may be longer than the server's context window (its log says); "
            "shorten it, or read the server's log",
        )

    def context_window(self) -> int:
        """`num_ctx`, capped at the window the server reports (vLLM's `max_model_len`)."""
        if self.server_window:
            return min(self.num_ctx, self.server_window)
        return self.num_ctx

    def tokens(self) -> OpenAITokens:
        key = api_key(self.key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = self.request_timeout if isinstance(self.request_timeout, int | float) else 30
        base = (self.openai_api_base or "").rstrip("/") + "/"  # so "models" joins under /v1
        return tokens_for(
            OpenAITokens, base, self._model_id(), self.token_cache, float(timeout), headers
        )

    def get_num_tokens(self, text: str) -> int:
        calibration = self.tokens().calibration()
        return calibration.estimate_text(text) + int(calibration.rates.per_prompt)

    def get_num_tokens_from_messages(
        self, messages: Sequence[BaseMessage], tools: Sequence[Any] | None = None, **_: Any
    ) -> int:
        return self.tokens().calibration().estimate_messages(messages)


class OpenAIChat(_Served, BaseChatOpenAI):
    """Chat completions (`/v1/chat/completions`) on an OpenAI-compatible server.

    BaseChatOpenAI, not ChatOpenAI: that one renames `max_tokens` to OpenAI's newer
    `max_completion_tokens`, which several compatible servers ignore.
    """

    num_ctx: int = 4096
    server_window: int | None = None
    key_env: str = DEFAULT_KEY_ENV
    token_cache: Path | None = None  # where measured token rates are kept; None: not kept
    use_responses_api: bool | None = False  # compatible servers speak chat completions

    def with_structured_output(
        self,
        schema: Any = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """As ChatOpenAI's: by default `response_format` with the JSON schema (vLLM's
        guided decoding holds the answer to it); "json_mode" sends {"type":
        "json_object"}. BaseChatOpenAI's own default is tool calling, which not every
        compatible server does. A server that refuses the response_format raises a
        StructuredOutputUnsupportedError saying what to use instead."""
        return super().with_structured_output(
            schema, method=method, include_raw=include_raw, strict=strict, **kwargs
        )

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """BaseChatOpenAI's payload, with an assistant's tool-call message sent with content
        "" instead of null: llama-cpp-python's server refuses a null content (a 500 naming
        the message), and OpenAI and vLLM take either."""
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        for message in payload.get("messages") or []:
            if message.get("role") == "assistant" and message.get("content") is None:
                message["content"] = ""
        return payload


class OpenAICompletion(_Served, OpenAI):
    """Text completions (`/v1/completions`): the completion form of PAL's prompts."""

    num_ctx: int = 4096
    server_window: int | None = None
    key_env: str = DEFAULT_KEY_ENV
    token_cache: Path | None = None  # where measured token rates are kept; None: not kept


class OpenAIEmbed(OpenAIEmbeddings):
    """`/v1/embeddings` for dense retrieval, with translated errors and no tiktoken
    (check_embedding_ctx_length=False sends the text itself, not OpenAI token ids)."""

    key_env: str = DEFAULT_KEY_ENV
    check_embedding_ctx_length: bool = False

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        timeout = self.request_timeout if isinstance(self.request_timeout, int | float) else 0
        return translate_errors(
            self.openai_api_base or "", self.model, self.key_env, float(timeout or 0)
        )

    def embed_documents(
        self, texts: list[str], chunk_size: int | None = None, **kwargs: Any
    ) -> list[list[float]]:
        with self._errors():
            return super().embed_documents(texts, chunk_size, **kwargs)

    def embed_query(self, text: str, **kwargs: Any) -> list[float]:
        with self._errors():
            return super().embed_query(text, **kwargs)
