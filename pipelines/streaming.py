"""`invoke` and `stream` for pipelines that stream text, then give one checked result.

RAG, chat and RAG chat each have one generator, `_run(parsed input, stream=...)`, that yields
pieces of the answer as the model writes them and ends with the finished result (a
`RAGAnswer`, a `ChatReply`). This mixin turns that into the Runnable methods: `stream`
yields everything, `invoke` returns the last item (traced as one chain run). `.batch` and
`.abatch` come from langchain-core on top of `invoke`.

`watching_prompts(watch)` lets a front end see each streamed model call's wait for its
first piece (a spinner saying how long the prompt is) without the pipelines knowing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.language_models import BaseLLM
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig

PromptWatch = Callable[[Any, PromptValue], AbstractContextManager[Any]]
_watch: ContextVar[PromptWatch | None] = ContextVar("llamapipe_prompt_watch", default=None)


@contextmanager
def watching_prompts(watch: PromptWatch) -> Iterator[None]:
    """Inside this block, a streamed model call waits for its first piece inside
    `watch(model, prompt)`, a context manager (it ends when the first piece arrives)."""
    token = _watch.set(watch)
    try:
        yield
    finally:
        _watch.reset(token)


def model_text(model: Any, prompt: PromptValue, *, stream: bool) -> Iterator[str]:
    """The model's answer to `prompt` as text: piece by piece when streaming, else whole.
    A completion model gets the prompt as one string, a chat model as messages."""
    model_input: Any = prompt.to_string() if isinstance(model, BaseLLM) else prompt
    if not stream:
        out = model.invoke(model_input)
        yield out.text if isinstance(out, BaseMessage) else str(out)
        return
    chunks = iter(model.stream(model_input))
    watch = _watch.get()
    if watch is not None:
        with watch(model, prompt):
            first = next(chunks, None)
        if first is None:
            return
        yield first.text if isinstance(first, BaseMessage) else str(first)
    for chunk in chunks:
        yield chunk.text if isinstance(chunk, BaseMessage) else str(chunk)


class StreamThenResult:
    """Mixin for a `RunnableSerializable`: implement `_parse` and `_run`."""

    def _parse(self, value: Any) -> Any:
        """The input as `_run` takes it (a question, a ChatTurn); UsageError when malformed."""
        raise NotImplementedError

    def _run(self, parsed: Any, *, stream: bool) -> Iterator[Any]:
        raise NotImplementedError

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        def run(value: Any) -> Any:
            *_, last = self._run(self._parse(value), stream=False)
            return last

        return self._call_with_config(run, input, config, run_type="chain")  # type: ignore[attr-defined]

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """The answer's text as it is generated, then the result."""
        yield from self._run(self._parse(input), stream=True)
