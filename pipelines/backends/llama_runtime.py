"""llama.cpp in this process: a loaded model shared by every model object built on the
same file and parameters, the lock that serialises calls into it, the chat template's
rendering and exact token counts, and llama.cpp's errors as ours."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pipelines.backends.llama_build import import_llama_cpp, safe_model_params
from pipelines.errors import ContextOverflowError, LlamaCppMissingError


def require_llama_cpp() -> Any:
    try:
        llama_cpp = import_llama_cpp()
    except ImportError:
        raise LlamaCppMissingError(
            "llama-cpp-python is not installed, so the embedded backend cannot run",
            hint="`pip install llama-cpp-python` (it compiles llama.cpp, about 5 minutes), "
            "or use `--backend ollama`",
        ) from None
    return llama_cpp


@dataclass
class LlamaRuntime:
    """One loaded model and the lock that serialises calls into it."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fresh(self) -> None:
        """Forget the KV cache before a call (hold `lock`).

        llama-cpp-python reuses a cached prompt prefix, and a prompt decoded in pieces
        gives slightly different logits than one decoded whole, so the same seeded call
        could answer differently depending on what ran before. Re-reading the prompt
        costs milliseconds on small models; repeatable answers are worth it. The memory is
        cleared outright, not only rewound: cells left behind by earlier calls must not
        leave a full-window prompt without a slot to decode into.
        """
        self.llama.reset()
        self.llama._ctx.kv_cache_clear()

    @cached_property
    def _formatter(self) -> Any:
        """The GGUF's chat template, set up as llama-cpp-python sets it up; ChatML when the
        file has none (what llama.cpp's own server falls back to)."""
        from llama_cpp import llama_chat_format

        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            return llama_chat_format.format_chatml
        model = self.llama._model
        eos, bos = self.llama.token_eos(), self.llama.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def chat_prompt(self, messages: list[dict[str, Any]]) -> ChatPrompt:
        """The tokens the model reads for these messages, and the template's stops."""
        result = self._formatter(messages=messages)
        tokens = self.llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = (
            result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        )
        return ChatPrompt(tokens, stop, result.stopping_criteria)

    def text_tokens(self, prompt: str) -> list[int]:
        """A raw prompt's tokens, BOS included where the model wants one."""
        return list(self.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    @property
    def n_ctx(self) -> int:
        return int(self.llama.n_ctx())

    @property
    def trained_ctx(self) -> int | None:
        arch = self.llama.metadata.get("general.architecture")
        value = self.llama.metadata.get(f"{arch}.context_length")
        return int(value) if value else None

    def room_for(self, prompt_tokens: int, wanted: int | None) -> int:
        """Tokens the answer may take: what was asked for, within the window, one cell
        spare (llama.cpp reads 0 or less as "until the window is full")."""
        room = max(1, self.n_ctx - prompt_tokens - 1)
        return room if wanted is None or wanted <= 0 else min(wanted, room)

    def require_room(self, tokens: int) -> None:
        """Refuse a prompt that leaves no token for the answer (llama.cpp would raise)."""
        if tokens < self.n_ctx:
            return
        trained = self.trained_ctx
        more = (
            f"raise it with --num-ctx (LLAMAPIPE_NUM_CTX; this model was trained for up to "
            f"{trained})"
            if trained and trained > self.n_ctx
            else "this model cannot read more"
        )
        raise ContextOverflowError.counted(
            "the prompt", tokens, self.n_ctx - 1, self.n_ctx, hint=f"shorten the input, or {more}"
        )


@dataclass(frozen=True)
class ChatPrompt:
    tokens: list[int]
    stop: list[str]
    stopping_criteria: Any


# Loading weights costs far more than a call, and several models built from one
# setting (chat, completion, a test server) should share one copy in memory.
_runtimes: dict[tuple[str, int, int, bool], LlamaRuntime] = {}
_runtimes_lock = threading.Lock()


def load_runtime(
    path: Path, n_ctx: int, threads: int | None = None, embedding: bool = False
) -> LlamaRuntime:
    """The loaded model for these parameters, loading it on first use."""
    n_threads = threads or os.cpu_count() or 1
    key = (str(path), n_ctx, n_threads, embedding)
    with _runtimes_lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            llama_cpp = require_llama_cpp()
            with safe_model_params():
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    embedding=embedding,
                    verbose=False,
                )
            runtime = _runtimes[key] = LlamaRuntime(llama)
        return runtime


@atexit.register
def _close_runtimes() -> None:
    # Free models while the interpreter is whole; llama.cpp's finaliser fails at shutdown.
    with _runtimes_lock:
        for runtime in _runtimes.values():
            runtime.llama.close()
        _runtimes.clear()


@contextlib.contextmanager
def decode_errors() -> Iterator[None]:
    """llama.cpp's "llama_decode returned 1" (no room left in the context) as one line with
    the way out, never an internal error."""
    try:
        yield
    except RuntimeError as exc:
        if "llama_decode" not in str(exc):
            raise
        raise ContextOverflowError(
            f"the model ran out of context room while answering ({exc})",
            hint="shorten the input or --max-tokens, or raise --num-ctx",
        ) from None
