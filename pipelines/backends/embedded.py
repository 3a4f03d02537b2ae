"""The embedded backend: llama.cpp in this process, through llama-cpp-python.

We wrap `llama_cpp.Llama` in our own langchain-core models rather than using
langchain-community's `ChatLlamaCpp`, because that one seeds the sampler once per
load (a repeated call with the same seed gives a different answer) and is not safe
to call from several threads (`.batch` would crash llama.cpp). Here every call
takes its own seed and calls into one loaded model are serialised by a lock.

Chat messages are rendered with the GGUF's own chat template (as llama-cpp-python does)
and tokenized once (llama_runtime.py), so the model can count a prompt exactly before it is sent
(`get_num_tokens_from_messages`, `context_window()`) and refuse one that does not fit with
a `ContextOverflowError` instead of llama.cpp's ValueError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.llms import LLM
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, GenerationChunk
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backends import structured, tools
from pipelines.backends.llama_runtime import LlamaRuntime, decode_errors, load_runtime
from pipelines.errors import UsageError


class LlamaParams(BaseModel):
    """Generation settings shared by the embedded chat and completion models."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: Path
    n_ctx: int = 4096
    threads: int | None = None
    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 512
    stop: list[str] = Field(default_factory=list)
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0

    @property
    def model_name(self) -> str:
        return self.model_path.name.removesuffix(".gguf")

    def _runtime(self) -> LlamaRuntime:
        return load_runtime(self.model_path, self.n_ctx, self.threads)

    # What the context budget (pipelines/budget.py) asks of a model.
    exact_token_counts: ClassVar[bool] = True

    def context_window(self) -> int:
        return self.n_ctx

    def _call_params(self, stop: list[str] | None, overrides: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stop": [*self.stop, *(stop or [])] or None,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
        }
        params.update({k: v for k, v in overrides.items() if k in params})
        if params["seed"] is None:
            # llama.cpp keeps its sampler state between calls; without a seed each call
            # must still differ, so draw one.
            params["seed"] = int.from_bytes(os.urandom(4), "little")
        return params


_ROLES = {
    SystemMessage: "system",
    HumanMessage: "user",
    AIMessage: "assistant",
    ToolMessage: "tool",
}


def _to_llama_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template takes them. An AI message's tool calls are written
    back as the model writes a call ({"name": ..., "arguments": ...}, one a line, after its
    text); a tool message is role "tool" (with its tool_call_id and name, for templates
    that use them), its content the tool's result, marked when the tool failed."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = next((r for t, r in _ROLES.items() if isinstance(message, t)), None)
        if role is None:
            raise UsageError(
                f"the embedded backend cannot send a {type(message).__name__}",
                hint="use system, human, AI and tool messages only",
            )
        content = str(message.text)
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = [tools.call_text(c["name"], c["args"]) for c in message.tool_calls]
            content = "\n".join([content, *calls] if content else calls)
        entry: dict[str, Any] = {"role": role, "content": content}
        if isinstance(message, ToolMessage):
            if message.status == "error":
                entry["content"] = (
                    f"Error: {content}" if not content.startswith("Error") else content
                )
            entry["tool_call_id"] = message.tool_call_id
            if message.name:
                entry["name"] = message.name
        converted.append(entry)
    return converted


def _usage(usage: dict[str, int] | None) -> UsageMetadata | None:
    if not usage:
        return None
    return UsageMetadata(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        total_tokens=usage["total_tokens"],
    )


def _grammar(response_format: Any, max_tokens: int) -> Any:
    """The llama.cpp grammar for a `response_format` within `max_tokens` (cached)."""
    from llama_cpp import LlamaGrammar

    schema = structured.response_format_schema(response_format)
    return LlamaGrammar.from_string(structured.grammar_text(schema, max_tokens), verbose=False)


def _tool_request(kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], Any] | None:
    """(the OpenAI tools, the normalized tool_choice) a call asks for; None without tools
    or with tool_choice "none" (then the answer is plain text)."""
    given = kwargs.get("tools")
    if not given:
        return None
    bound = tools.openai_tools(given)
    choice = tools.normalize_choice(kwargs.get("tool_choice"), bound)
    return None if choice == "none" else (bound, choice)


def _prompt_messages(
    messages: list[BaseMessage], request: tuple[list[dict[str, Any]], Any] | None
) -> list[dict[str, Any]]:
    converted = _to_llama_messages(messages)
    return converted if request is None else tools.with_tools_prompt(converted, *request)


def _answer(text: str, calling: bool, **fields: Any) -> AIMessage:
    """The answer as an AIMessage: with tool_calls (and content "") when it is a call."""
    calls, invalid = tools.parse_call(text) if calling else ([], [])
    if calls:
        return AIMessage(content="", tool_calls=calls, **fields)
    return AIMessage(content=text, invalid_tool_calls=invalid, **fields)


class EmbeddedChatModel(LlamaParams, BaseChatModel):
    """A langchain-core chat model over a GGUF file run in-process by llama.cpp.

    `with_structured_output` constrains decoding with a grammar made from the schema, so
    the answer parses by construction (pipelines/backends/structured.py); the same happens
    for a `response_format` passed to a call or bound: {"type": "json_object"} for any
    JSON object, {"type": "json_object", "schema": {...}} for a JSON schema.
    """

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """The model's answers parsed into `schema` (a pydantic class, a TypedDict or a
        JSON schema): method "json_schema" holds decoding to the schema's grammar,
        "json_mode" to any JSON object (the prompt must then say which keys);
        "function_calling" does what "json_schema" does.
        `include_raw=True` gives {"raw", "parsed", "parsing_error"} instead."""
        return structured.structured_output(self, schema, method, include_raw, kwargs)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with these tools: shown in the prompt, and the answer held to a grammar
        of a call to one of them with its argument schema (pipelines/backends/tools.py).
        tool_choice: None/"auto" (a call or text), "any"/"required" (a call), a tool's
        name (a call to it), "none" (text)."""
        from pipelines.backends import tools as tool_calls

        bound = tool_calls.openai_tools(tools)
        tool_calls.normalize_choice(tool_choice, bound)  # a bad choice fails here, not later
        return super().bind(tools=bound, tool_choice=tool_choice, **kwargs)

    @property
    def _llm_type(self) -> str:
        return "llamapipe-embedded-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "n_ctx": self.n_ctx}

    def get_num_tokens(self, text: str) -> int:
        return len(self._runtime().llama.tokenize(text.encode("utf-8"), add_bos=False))

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        """Exactly what the model will read: the messages in its chat template (with the
        tools shown, when given)."""
        runtime = self._runtime()
        request = _tool_request({"tools": tools})
        with runtime.lock:
            return len(runtime.chat_prompt(_prompt_messages(messages, request)).tokens)

    def _start(
        self, runtime: LlamaRuntime, messages: list[BaseMessage], stop: list[str] | None,
        kwargs: dict[str, Any], stream: bool,
    ) -> tuple[Any, int, bool]:  # fmt: skip
        """(llama.cpp's completion or stream, prompt tokens, whether the answer may be a tool
        call); hold `runtime.lock`."""
        request = _tool_request(kwargs)
        prompt = runtime.chat_prompt(_prompt_messages(messages, request))
        runtime.require_room(len(prompt.tokens))
        runtime.fresh()
        params = self._call_params([*(stop or []), *prompt.stop], kwargs)
        params["max_tokens"] = runtime.room_for(len(prompt.tokens), params["max_tokens"])
        if request is not None:
            from llama_cpp import LlamaGrammar

            if kwargs.get("response_format") is not None:
                raise UsageError(
                    "a call cannot take both tools and a response_format",
                    hint="bind one of them",
                )
            text = tools.grammar_text(*request, params["max_tokens"])
            params["grammar"] = LlamaGrammar.from_string(text, verbose=False)
        elif kwargs.get("response_format") is not None:
            params["grammar"] = _grammar(kwargs["response_format"], params["max_tokens"])
        completion = runtime.llama.create_completion(
            prompt=prompt.tokens,
            stopping_criteria=prompt.stopping_criteria,
            stream=stream,
            **params,
        )
        return completion, len(prompt.tokens), request is not None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        runtime = self._runtime()
        with runtime.lock, decode_errors():
            response, _, calling = self._start(runtime, messages, stop, kwargs, stream=False)
        choice = response["choices"][0]
        message = _answer(
            choice["text"],
            calling,
            usage_metadata=_usage(response.get("usage")),
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": choice.get("finish_reason"),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        runtime = self._runtime()
        with runtime.lock, decode_errors():  # held until the stream ends or is closed
            stream, prompt_tokens, calling = self._start(
                runtime, messages, stop, kwargs, stream=True
            )
            parts: list[str] = []
            # A tool call is held back and comes whole in the last chunk (as tool_call_chunks);
            # with tool_choice "auto" the first characters say whether the answer is one.
            held: bool | None = None if calling else False
            for part in stream:
                choice = part["choices"][0]
                text = choice["text"] or ""
                finish = choice.get("finish_reason")
                if not text and not finish:
                    continue
                parts.append(text)
                if held is None and "".join(parts).strip():
                    held = tools.is_call("".join(parts))
                    text = "".join(parts)  # what was held while undecided
                if held is not False and not finish:
                    continue
                metadata: dict[str, Any] = {}
                usage = None
                if finish:  # the last chunk carries the usage, as Ollama's and OpenAI's do
                    metadata = {"model_name": self.model_name, "finish_reason": finish}
                    generated = len(
                        runtime.llama.tokenize("".join(parts).encode("utf-8"), add_bos=False)
                    )
                    usage = _usage(
                        {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                         "total_tokens": prompt_tokens + generated}
                    )  # fmt: skip
                message = AIMessageChunk(
                    content=text, response_metadata=metadata, usage_metadata=usage
                )
                if held is not False:  # the end of a held answer: a call, or text after all
                    answer = _answer("".join(parts), True)
                    text = answer.text  # the callback sees a call as no text, not its JSON
                    message = AIMessageChunk(
                        content=answer.text,
                        tool_call_chunks=[
                            {"name": c["name"], "args": json.dumps(c["args"], ensure_ascii=False),
                             "id": c["id"], "index": 0, "type": "tool_call_chunk"}
                            for c in answer.tool_calls
                        ],
                        response_metadata=metadata,
                        usage_metadata=usage,
                    )  # fmt: skip
                chunk = ChatGenerationChunk(message=message)
                if run_manager and text:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


class EmbeddedLLM(LlamaParams, LLM):
    """The same model as a completion (raw prompt) model, for completion-form prompts."""

    @property
    def _llm_type(self) -> str:
        return "llamapipe-embedded-completion"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "n_ctx": self.n_ctx}

    def get_num_tokens(self, text: str) -> int:
        """Exactly what the model will read for this raw prompt (BOS included)."""
        runtime = self._runtime()
        with runtime.lock:
            return len(runtime.text_tokens(text))

    def _start(
        self, runtime: LlamaRuntime, prompt: str, stop: list[str] | None,
        kwargs: dict[str, Any], stream: bool,
    ) -> Any:  # fmt: skip
        tokens = runtime.text_tokens(prompt)
        runtime.require_room(len(tokens))
        runtime.fresh()
        params = self._call_params(stop, kwargs)
        params["max_tokens"] = runtime.room_for(len(tokens), params["max_tokens"])
        return runtime.llama.create_completion(prompt=tokens, stream=stream, **params)

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        runtime = self._runtime()
        with runtime.lock, decode_errors():
            response = self._start(runtime, prompt, stop, kwargs, stream=False)
        return str(response["choices"][0]["text"])

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        runtime = self._runtime()
        with runtime.lock, decode_errors():
            for part in self._start(runtime, prompt, stop, kwargs, stream=True):
                text = part["choices"][0]["text"]
                if not text:
                    continue
                chunk = GenerationChunk(text=text)
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


def _pooled(vector: Any) -> list[float]:
    """One L2-normalised vector. Models without a pooling type (chat models such as
    SmolLM2) give one vector per token; those are mean-pooled first."""
    import numpy as np

    array = np.asarray(vector, dtype=np.float64)
    if array.ndim == 2:
        array = array.mean(axis=0)
    norm = float(np.linalg.norm(array))
    return (array / norm if norm else array).tolist()


class EmbeddedEmbeddings(BaseModel, Embeddings):
    """Embeddings from a GGUF embedding model, L2-normalised like Ollama's /api/embed."""

    model_path: Path
    n_ctx: int = 4096
    threads: int | None = None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        runtime = load_runtime(self.model_path, self.n_ctx, self.threads, embedding=True)
        with runtime.lock:
            vectors = runtime.llama.embed(texts)
        return [_pooled(v) for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
