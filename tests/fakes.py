"""Scripted fake models: replies decided by the test, every call recorded, no sockets."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

Script = list[str] | Callable[[str], str]


class _Recorder:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def reply(self, prompt: str, **params: Any) -> str:
        with self.lock:
            self.calls.append({"prompt": prompt, **params})
            if callable(self.script):
                return self.script(prompt)
            if not self.script:
                raise AssertionError("the scripted model ran out of replies")
            return self.script.pop(0)


def _as_text(messages: list[BaseMessage]) -> str:
    return "\n".join(f"[{m.type}] {m.text}" for m in messages)


class ScriptedChat(BaseChatModel):
    """Replies from a list (in order) or a function of the prompt text."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recorder: Any = Field(exclude=True)
    temperature: float = 0.0
    seed: int | None = 0
    model_name: str = "scripted-chat"
    num_ctx: int | None = None  # a declared window, as a model the budget does not know
    max_tokens: int | None = None
    chunk_delay: float = 0.0  # seconds between streamed words: a slow model to interrupt

    def __init__(self, script: Script, **kw: Any) -> None:
        super().__init__(recorder=_Recorder(script), **kw)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.recorder.calls)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text = self.recorder.reply(
            _as_text(messages), temperature=self.temperature, seed=self.seed, messages=messages
        )
        for i, word in enumerate(re.findall(r"\S+\s*|\s+", text)):
            if i and self.chunk_delay:
                time.sleep(self.chunk_delay)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.recorder.reply(
            _as_text(messages), temperature=self.temperature, seed=self.seed, messages=messages
        )
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class ScriptedLLM(LLM):
    """A completion model with a script; records the raw prompt and stop sequences."""

    recorder: Any = Field(exclude=True)
    temperature: float = 0.0
    seed: int | None = 0
    model_name: str = "scripted-llm"
    num_ctx: int | None = None
    max_tokens: int | None = None

    def __init__(self, script: Script, **kw: Any) -> None:
        super().__init__(recorder=_Recorder(script), **kw)

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.recorder.calls)

    @property
    def _llm_type(self) -> str:
        return "scripted-llm"

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self.recorder.reply(prompt, stop=stop, temperature=self.temperature, seed=self.seed)


class WordEmbeddings:
    """Deterministic bag-of-words vectors (a langchain `Embeddings` by duck typing), with
    an optional synonym map so 'dense' can find what BM25 cannot."""

    def __init__(self, dims: int = 256, synonyms: dict[str, str] | None = None) -> None:
        self.dims = dims
        self.synonyms = synonyms or {}
        self.calls = 0

    def _vector(self, text: str) -> list[float]:
        import hashlib
        import re

        vec = [0.0] * self.dims
        for word in re.findall(r"\w+", text.casefold()):
            word = self.synonyms.get(word, word)
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dims] += 1.0
        return vec

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)
