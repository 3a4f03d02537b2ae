"""The Ollama backend: langchain-ollama models whose errors say what to do next, which know
their context window and count prompt tokens (calibrated, see served_tokens), refuse a prompt
that cannot fit, and say so when Ollama cut one anyway (it does that silently)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import ollama
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_ollama import ChatOllama, OllamaEmbeddings, OllamaLLM

from pipelines.backends.ollama_probe import missing_model_error, reason, unreachable_error
from pipelines.backends.retry import Backoff, retrying, retrying_stream
from pipelines.backends.served_tokens import OllamaTokens, tokens_for
from pipelines.errors import (
    BackendError,
    ContextOverflowError,
    ModelTimeoutError,
    OllamaResponseError,
    PromptTruncatedWarning,
)

OLLAMA_DEFAULT_CTX = 2048  # what older servers use when a request names no num_ctx


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
        if exc.status_code == 400 and "context" in str(exc.error).lower():
            # Newer servers refuse some over-long prompts instead of cutting them.
            raise ContextOverflowError(
                f"Ollama at {host} refused the prompt: {exc.error}",
                hint="shorten the input, or raise --num-ctx if the model allows more",
            ) from None
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
        raise unreachable_error(host, reason(exc)) from None
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise OllamaResponseError(
            f"the connection to Ollama at {host} broke off mid-answer ({exc})",
            hint="try again; if it repeats, read the Ollama server log",
        ) from None


class _Translated:
    """Mixin: the same models, but failures raise llamapipe errors (see translate_errors)."""

    base_url: str | None
    model: str

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.base_url or "", self.model, self._timeout())

    def _timeout(self) -> float:
        kwargs: dict[str, Any] = getattr(self, "client_kwargs", None) or {}
        return float(kwargs.get("timeout") or 30.0)


class _Measured(_Translated):
    """Mixin for the generating models: prompts are measured against the window before
    they are sent, and what the server read is checked after."""

    if TYPE_CHECKING:  # fields of the pydantic models this is mixed into
        num_ctx: int | None
        token_cache: Path | None  # where calibrated token rates are kept; None: not kept
        retries: int  # tries again after a busy or broken-off answer (backends/retry.py)

    exact_token_counts: ClassVar[bool] = False

    def tokens(self) -> OllamaTokens:
        return tokens_for(
            OllamaTokens, self.base_url or "", self.model, self.token_cache, self._timeout()
        )

    def context_window(self) -> int:
        """`num_ctx` as sent with every request, capped at the model's own maximum."""
        window = self.num_ctx or OLLAMA_DEFAULT_CTX
        with self._errors():
            model_max = self.tokens().model_max()
        return min(window, model_max) if model_max else window

    def _estimate(self, prompt: Sequence[BaseMessage] | str) -> int:
        with self._errors():
            calibration = self.tokens().calibration()
        if isinstance(prompt, str):
            return calibration.estimate_text(prompt) + int(calibration.rates.per_prompt)
        return calibration.estimate_messages(prompt)

    def _before(self, prompt: Sequence[BaseMessage] | str) -> tuple[int, int]:
        """(estimated prompt tokens, window); refuse what cannot fit: Ollama would cut it."""
        estimate, window = self._estimate(prompt), self.context_window()
        if estimate >= window:
            raise ContextOverflowError.counted(
                "the prompt",
                estimate,
                window - 1,
                window,
                hint=f"shorten the input, or raise --num-ctx (now {window}) if {self.model} "
                "allows more (`ollama show` prints its context length)",
            )
        return estimate, window

    def _after(self, estimate: int, window: int, info: dict[str, Any] | None) -> None:
        """Check what the server read; warn, and mark the answer, when it cut the prompt."""
        if not info or "prompt_eval_count" not in info:
            return
        evaluated = info.get("prompt_eval_count")
        tokens = self.tokens()
        if tokens.truncated(estimate, evaluated, window):
            info["prompt_truncated"] = {
                "sent_estimate": estimate, "evaluated": evaluated, "num_ctx": window,
            }  # fmt: skip
            warnings.warn(
                PromptTruncatedWarning(
                    f"Ollama read {evaluated} of about {estimate} prompt tokens: it cut the "
                    f"prompt's front to fit its window (num_ctx {window} was asked for), so "
                    "the answer rests on part of the prompt",
                    hint="raise --num-ctx or shorten the input; if num_ctx is already large, "
                    "the server holds the model with a smaller window (`ollama ps` shows it; "
                    "OLLAMA_CONTEXT_LENGTH or memory sets it)",
                ),
                stacklevel=3,
            )
        else:
            tokens.observe(estimate, evaluated, window)

    def _backoff(self) -> Backoff:
        return Backoff(retries=self.retries)

    def _capped_options(self, options: dict[str, Any], estimate: int, window: int) -> None:
        """Keep prompt plus answer inside the window: past it, Ollama shifts the context
        and drops the prompt's front mid-answer."""
        room = window - estimate
        wanted = options.get("num_predict")
        if wanted is None or wanted < 0 or wanted > room:
            options["num_predict"] = max(1, room)


class OllamaChat(_Measured, ChatOllama):
    """langchain-ollama's ChatOllama with errors that name the host and the fix, a known
    window, calibrated token counts, and truncation that is never silent."""

    token_cache: Path | None = None
    retries: int = 3

    def get_num_tokens(self, text: str) -> int:
        return self._estimate([HumanMessage(content=text)]) - self._estimate([])

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return self._estimate(messages)

    def _chat_params(
        self, messages: list[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        params = super()._chat_params(messages, stop, **kwargs)
        self._capped_options(params.setdefault("options", {}), *self._before(messages))
        return params

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, *args: Any,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        with self._errors():
            estimate, window = self._before(messages)
            result = retrying(
                lambda: super(OllamaChat, self)._generate(messages, stop, *args, **kwargs),
                self._backoff(),
            )
        self._after(estimate, window, result.generations[0].generation_info)
        return result

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, *args: Any,
        **kwargs: Any,
    ) -> Iterator[Any]:  # fmt: skip
        with self._errors():
            estimate, window = self._before(messages)
            chunks = retrying_stream(
                lambda: super(OllamaChat, self)._stream(messages, stop, *args, **kwargs),
                self._backoff(),
            )
            for chunk in chunks:
                if chunk.generation_info:  # the last chunk; merged into response_metadata
                    self._after(estimate, window, chunk.generation_info)
                yield chunk

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            return await super()._agenerate(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        with self._errors():
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk


class OllamaCompletion(_Measured, OllamaLLM):
    """langchain-ollama's OllamaLLM (`/api/generate`) with translated errors, a known
    window and calibrated token counts.

    Prompts go raw (`"raw": true`): completion-form templates are already the full
    text the model should continue, so Ollama must not wrap them in a chat template.
    """

    token_cache: Path | None = None
    retries: int = 3

    def get_num_tokens(self, text: str) -> int:
        return self._estimate(text)

    def _generate_params(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("raw", True)
        params = super()._generate_params(prompt, stop, **kwargs)
        self._capped_options(params.setdefault("options", {}), *self._before(prompt))
        return params

    def _generate(self, prompts: list[str], *args: Any, **kwargs: Any) -> Any:
        with self._errors():
            checked = [self._before(p) for p in prompts]
            result = retrying(
                lambda: super(OllamaCompletion, self)._generate(prompts, *args, **kwargs),
                self._backoff(),
            )
        for (estimate, window), generations in zip(checked, result.generations, strict=True):
            self._after(estimate, window, generations[0].generation_info)
        return result

    def _stream(self, prompt: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._errors():
            estimate, window = self._before(prompt)
            chunks = retrying_stream(
                lambda: super(OllamaCompletion, self)._stream(prompt, *args, **kwargs),
                self._backoff(),
            )
            for chunk in chunks:
                if chunk.generation_info:
                    self._after(estimate, window, chunk.generation_info)
                yield chunk


class OllamaEmbed(_Translated, OllamaEmbeddings):
    """langchain-ollama's OllamaEmbeddings (`/api/embed`) with translated errors."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._errors():
            return super().embed_documents(texts)
