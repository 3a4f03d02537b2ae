"""An Ollama-protocol HTTP server on loopback, backed by the embedded GGUF model.

It implements the endpoints llamapipe uses, as Ollama's published API describes
them (docs/api.md): GET /api/version, GET /api/tags, POST /api/show,
POST /api/chat and /api/generate (NDJSON streams, or one JSON object with
"stream": false), POST /api/embed. Unknown models get Ollama's 404
`{"error": "model \\"x\\" not found, try pulling it first"}`.

Prompts are measured as Ollama measures them: the chat template applied, tokenized by
the model, `prompt_eval_count` the tokens read. A prompt longer than `num_ctx` is cut as
Ollama's runner cuts it (the first `KEEP` tokens, then the last ones up to half the
window; 200 OK, the only trace a low `prompt_eval_count`), or, with
`overflow="refuse"`, refused with a 400 as newer servers do for some models.

Structured output: a request's `format` ("json", or a JSON schema) constrains decoding with
the grammar llamapipe's embedded model uses (pipelines/backends/structured.py), as Ollama
constrains it with llama.cpp's grammar, so the answer is valid for the schema; every format
received is kept in `formats`. A scripted server answers its script whatever the format.

Tool calling: a /api/chat request's `tools` are shown to the model in the system message and
the answer is held to the grammar of a call or plain text (pipelines/backends/tools.py, what
llamapipe's embedded model does with tool_choice "auto"), or, with `tool_choice="required"`
on the server, to a call: a call comes back as Ollama sends one, `message.tool_calls` =
[{"function": {"name", "arguments": {...}}}] with content "". A scripted answer that is a
dict {"name", "arguments"} is such a call. Every `tools` list received is kept in `tools`;
history messages with `tool_calls` and role "tool" messages are read back into the prompt.

Faults can be injected for the next requests (see `Fault`): an error status, a
slow first byte, or a stream cut off mid-way. A refused connection is simply a
port nobody listens on (`refused_url()`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines.backends.embedded import EmbeddedEmbeddings
from pipelines.backends.gguf import read_gguf_info
from pipelines.backends.llama_runtime import load_runtime

VERSION = "0.6.0-llamapipe-test"
KEEP = 4  # tokens Ollama keeps from the front when it cuts a prompt


@dataclass
class Fault:
    """What goes wrong with the next matching request.

    kind: "status" (answer `status` with an error body), "slow" (wait `delay`
    seconds before the first byte), "cut" (close the connection after `after`
    stream chunks, mid-way through the chunked body).
    """

    kind: str
    path: str | None = None  # only requests to this path; None = any
    status: int = 500
    delay: float = 0.0
    after: int = 2
    times: int = 1


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops a SYN when eight clients connect at once; the
    # client retries a second later, and a concurrency test sees one call fewer in flight.
    request_queue_size = 128


def refused_url() -> str:
    """A loopback URL where the connection is refused (the port was just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaProtocolServer:
    """`with OllamaProtocolServer({"smollm2:135m": path}) as server: server.url`"""

    def __init__(
        self,
        models: dict[str, Path],
        n_ctx: int = 4096,
        overflow: str = "truncate",
        max_ctx: int | None = None,
        scripted: Callable[[str], str | dict[str, Any]] | None = None,
        latency: float = 0.0,
        tool_choice: str = "auto",
    ) -> None:
        self.models = models
        # Scripted: answer `scripted(prompt text)` after `latency` seconds, without the model,
        # many requests at once (a served model's latency, for concurrency tests and benches).
        self.scripted = scripted
        self.latency = latency
        self.in_flight = 0
        self.most_in_flight = 0
        self.n_ctx = n_ctx  # the window when a request names no num_ctx
        self.overflow = overflow  # "truncate" (Ollama's default) or "refuse"
        # A window smaller than asked for, as a server short of memory loads a model with:
        # what makes a prompt that llamapipe sized for num_ctx get cut after all.
        self.max_ctx = max_ctx
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.formats: list[Any] = []  # the `format` of each generating request that had one
        self.tools: list[list[dict[str, Any]]] = []  # the `tools` of each chat that had them
        self.tool_choice = tool_choice  # "auto" (a call or text) or "required" (a call)
        self._tool_choice = tool_choice  # what clear() goes back to
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._infos = {name: read_gguf_info(path) for name, path in models.items()}
        handler = type("Handler", (_Handler,), {"backend": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> OllamaProtocolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.formats.clear()
            self.tools.clear()
            self.tool_choice = self._tool_choice

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path in (None, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def record(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append((path, body))
            if path in ("/api/chat", "/api/generate") and body.get("format"):
                self.formats.append(body["format"])
            if path == "/api/chat" and body.get("tools"):
                self.tools.append(body["tools"])

    # -- what the endpoints answer ------------------------------------------------------------

    def tags(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": _now(),
                    "size": info.size_bytes,
                    "digest": f"{abs(hash(name)):064x}"[:64],
                    "details": self._details(name),
                }
                for name, info in self._infos.items()
            ]
        }

    def _details(self, name: str) -> dict[str, Any]:
        info = self._infos[name]
        return {
            "parent_model": "",
            "format": "gguf",
            "family": info.architecture,
            "families": [info.architecture],
            "parameter_size": info.size_label,
            "quantization_level": "Q4_1",
        }

    def show(self, name: str) -> dict[str, Any]:
        info = self._infos[name]
        return {
            "modelfile": f"FROM {info.path}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": self._details(name),
            "model_info": {
                "general.architecture": info.architecture,
                "general.parameter_count": info.parameters,
                f"{info.architecture}.context_length": info.context_length,
            },
            "capabilities": ["completion", "tools", "embedding"],  # tools: see /api/chat
            "modified_at": _now(),
        }

    def runtime(self, name: str, n_ctx: int | None = None) -> Any:
        return load_runtime(self.models[name], n_ctx or self.n_ctx)


def _llama_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Ollama `options` -> llama-cpp-python sampling arguments."""
    options = options or {}
    params: dict[str, Any] = {
        "temperature": options.get("temperature", 0.8),
        "seed": options.get("seed") if options.get("seed") is not None else 0,
        "max_tokens": options.get("num_predict") or 128,
        "stop": options.get("stop") or None,
        "top_k": options.get("top_k") or 40,
        "top_p": options.get("top_p") or 0.9,
        "repeat_penalty": options.get("repeat_penalty") or 1.0,
    }
    if params["max_tokens"] < 0:  # Ollama: -1 means "until done"
        params["max_tokens"] = 512
    return params


def _history(message: dict[str, Any]) -> dict[str, Any]:
    """An Ollama chat message as the chat template takes it: an assistant's tool calls
    written back as the model writes a call, a tool message's name kept."""
    from pipelines.backends.tools import call_text

    content = message.get("content") or ""
    calls = [
        call_text(c["function"]["name"], c["function"].get("arguments") or {})
        for c in message.get("tool_calls") or []
    ]
    entry = {
        "role": message.get("role", "user"),
        "content": "\n".join(filter(None, [content, *calls])),
    }
    if message.get("tool_name"):
        entry["name"] = message["tool_name"]
    return entry


def _ollama_calls(text: str) -> list[dict[str, Any]]:
    """The tool call in an answer, in Ollama's shape ([] for plain text)."""
    from pipelines.backends.tools import parse_call

    calls, _ = parse_call(text)
    return [{"function": {"name": c["name"], "arguments": c["args"]}} for c in calls]


def _format_grammar(answer_format: Any, max_tokens: int) -> Any:
    """The llama.cpp grammar for Ollama's `format` ("json" or a JSON schema); None when it
    is neither, or the schema cannot be held within `max_tokens`."""
    from llama_cpp import LlamaGrammar

    from pipelines.backends.structured import grammar_text
    from pipelines.errors import StructuredOutputError

    if answer_format != "json" and not isinstance(answer_format, dict):
        return None
    try:
        text = grammar_text(None if answer_format == "json" else answer_format, max_tokens)
    except StructuredOutputError:
        return None
    return LlamaGrammar.from_string(text, verbose=False)


class _Handler(BaseHTTPRequestHandler):
    backend: OllamaProtocolServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    # -- plumbing -----------------------------------------------------------------------------

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _stream(self, parts: Any, fault: Fault | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, part in enumerate(parts):
            if fault and fault.kind == "cut" and i == fault.after:
                # Close without the terminating zero-length chunk: a broken stream.
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            line = (json.dumps(part) + "\n").encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._error(400, "invalid JSON in request body")
            return None
        return body if isinstance(body, dict) else {}

    def _prelude(self, path: str) -> Fault | None:
        """Apply a pending fault; returns it when the handler must still act on it."""
        fault = self.backend.take_fault(path)
        if fault is None:
            return None
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return None
        if fault.kind == "status":
            self._error(fault.status, f"injected failure ({fault.status})")
            return fault
        return fault

    def _model(self, body: dict[str, Any]) -> str | None:
        name = body.get("model") or ""
        for candidate in (name, f"{name}:latest"):
            if candidate in self.backend.models:
                return candidate
        self._error(404, f'model "{name}" not found, try pulling it first')
        return None

    # -- endpoints ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self.backend.record(self.path, {})
        fault = self._prelude(self.path)
        if fault and fault.kind == "status":
            return
        if self.path == "/api/version":
            self._send_json(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self._send_json(200, self.backend.tags())
        elif self.path == "/":
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._error(404, "404 page not found")

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        self.backend.record(self.path, body)
        fault = self._prelude(self.path)
        if fault and fault.kind == "status":
            return
        routes = {
            "/api/show": self._show,
            "/api/chat": self._chat,
            "/api/generate": self._generate,
            "/api/embed": self._embed,
        }
        route = routes.get(self.path)
        if route is None:
            self._error(404, "404 page not found")
            return
        route(body, fault)

    def _show(self, body: dict[str, Any], fault: Fault | None) -> None:
        name = self._model(body)
        if name:
            self._send_json(200, self.backend.show(name))

    def _chat(self, body: dict[str, Any], fault: Fault | None) -> None:
        name = self._model(body)
        if not name:
            return
        messages = [_history(m) for m in body.get("messages", [])]
        self._respond(name, body, fault, messages=messages)

    def _generate(self, body: dict[str, Any], fault: Fault | None) -> None:
        name = self._model(body)
        if not name:
            return
        if body.get("raw"):
            self._respond(name, body, fault, prompt=body.get("prompt", ""))
            return
        messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
        messages.append({"role": "user", "content": body.get("prompt", "")})
        self._respond(name, body, fault, messages=messages)

    def _respond(
        self,
        name: str,
        body: dict[str, Any],
        fault: Fault | None,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
    ) -> None:
        """Generate with llama.cpp; answer in /api/chat or /api/generate shape."""
        chat = self.path == "/api/chat"
        if self.backend.scripted is not None:
            self._scripted(name, body, chat, messages, prompt)
            return
        options = body.get("options") or {}
        params = _llama_options(options)
        window = int(options.get("num_ctx") or self.backend.n_ctx)
        window = min(window, self.backend.max_ctx or window)
        runtime = self.backend.runtime(name, window)
        offered = body.get("tools") if chat else None
        choice = "required" if self.backend.tool_choice == "required" else "auto"
        if offered and messages is not None:
            from pipelines.backends import tools as tool_calls

            messages = tool_calls.with_tools_prompt(messages, offered, choice)
        with runtime.lock:
            if messages is not None:
                templated = runtime.chat_prompt(messages)
                tokens, stop = templated.tokens, templated.stop
            else:
                tokens, stop = runtime.text_tokens(prompt or ""), []
        if len(tokens) > window:
            if self.backend.overflow == "refuse":
                self._error(400, "the input length exceeds the context length")
                return
            tokens = tokens[:KEEP] + tokens[-(window // 2 + 2 - KEEP) :]
        params["stop"] = [*(params["stop"] or []), *stop] or None
        params["max_tokens"] = min(params["max_tokens"], window - len(tokens))
        answer_format = body.get("format")
        if answer_format:
            grammar = _format_grammar(answer_format, params["max_tokens"])
            if grammar is None:
                self._error(400, f"invalid format: {json.dumps(answer_format)[:80]}")
                return
            params["grammar"] = grammar
        elif offered:
            from llama_cpp import LlamaGrammar

            from pipelines.backends import tools as tool_calls

            text = tool_calls.grammar_text(offered, choice, params["max_tokens"])
            params["grammar"] = LlamaGrammar.from_string(text, verbose=False)
        started = time.perf_counter_ns()

        def piece(text: str) -> dict[str, Any]:
            base = {"model": name, "created_at": _now(), "done": False}
            if chat:
                return {**base, "message": {"role": "assistant", "content": text}}
            return {**base, "response": text}

        def generate() -> Any:
            count, reason = 0, "stop"
            with runtime.lock:
                runtime.fresh()
                stream = runtime.llama.create_completion(prompt=tokens, stream=True, **params)
                for part in stream:
                    text, finish = part["choices"][0]["text"], part["choices"][0]["finish_reason"]
                    if finish:
                        reason = finish
                    if text:
                        count += 1
                        yield piece(text)
            elapsed = time.perf_counter_ns() - started
            final = piece("")
            final.update(
                done=True,
                done_reason="length" if reason == "length" else "stop",
                total_duration=elapsed,
                load_duration=0,
                prompt_eval_count=len(tokens),
                prompt_eval_duration=0,
                eval_count=count,
                eval_duration=elapsed,
            )
            if not chat:
                final["context"] = []
            yield final

        if offered:  # a call comes whole, as Ollama sends one: tool_calls, content ""
            parts = list(generate())
            text = "".join(p["message"]["content"] for p in parts[:-1])
            calls = _ollama_calls(text)
            if calls:
                message = {"role": "assistant", "content": "", "tool_calls": calls}
                if body.get("stream", True):
                    self._stream(iter([{**piece(""), "message": message}, parts[-1]]), fault)
                else:
                    self._send_json(200, {**parts[-1], "message": message})
                return
            if body.get("stream", True):
                self._stream(iter(parts), fault)
                return
        elif body.get("stream", True):
            self._stream(generate(), fault)
            return
        else:
            parts = list(generate())
        final = parts[-1]
        text = "".join(p["message"]["content"] if chat else p["response"] for p in parts[:-1])
        if chat:
            final["message"] = {"role": "assistant", "content": text}
        else:
            final["response"] = text
        self._send_json(200, final)

    def _scripted(
        self,
        name: str,
        body: dict[str, Any],
        chat: bool,
        messages: list[dict[str, Any]] | None,
        prompt: str | None,
    ) -> None:
        """A fixed latency and a scripted answer; one token per prompt character. An answer
        {"name", "arguments"} is a tool call."""
        backend = self.backend
        text = "\n".join(m["content"] for m in messages) if messages is not None else prompt or ""
        with backend._lock:
            backend.in_flight += 1
            backend.most_in_flight = max(backend.most_in_flight, backend.in_flight)
        try:
            time.sleep(backend.latency)
            scripted = backend.scripted(text)
        finally:
            with backend._lock:
                backend.in_flight -= 1
        calls: list[dict[str, Any]] = []
        if isinstance(scripted, dict):
            calls = [{"function": {"name": scripted["name"], "arguments": scripted["arguments"]}}]
            answer = ""
        else:
            answer = scripted
        final: dict[str, Any] = {
            "model": name, "created_at": _now(), "done": True, "done_reason": "stop",
            "total_duration": int(backend.latency * 1e9), "load_duration": 0,
            "prompt_eval_count": len(text) + 8, "prompt_eval_duration": 0,
            "eval_count": max(1, len(answer)), "eval_duration": int(backend.latency * 1e9),
        }  # fmt: skip
        if chat:
            final["message"] = {"role": "assistant", "content": answer}
            if calls:
                final["message"]["tool_calls"] = calls
        else:
            final["response"], final["context"] = answer, []
        if body.get("stream", True):
            first = {**final, "done": False}
            first = {
                k: first[k]
                for k in ("model", "created_at", "done", "message" if chat else "response")
            }
            last = {
                **final,
                ("message" if chat else "response"): {"role": "assistant", "content": ""}
                if chat
                else "",
            }
            self._stream(iter([first, last]), None)
        else:
            self._send_json(200, final)

    def _embed(self, body: dict[str, Any], fault: Fault | None) -> None:
        name = self._model(body)
        if not name:
            return
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        started = time.perf_counter_ns()
        embedder = EmbeddedEmbeddings(
            model_path=self.backend.models[name], n_ctx=self.backend.n_ctx
        )
        self._send_json(
            200,
            {
                "model": name,
                "embeddings": embedder.embed_documents(texts),
                "total_duration": time.perf_counter_ns() - started,
                "load_duration": 0,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            },
        )
