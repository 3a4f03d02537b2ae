"""The OpenAI-compatible backend without a network: what goes on the wire (through httpx's
MockTransport), how each failure reads, token counting without tiktoken, the settings, and
concurrent embedding while ingesting."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import tiktoken

from llamapipe_app.commands.common import settings_from_flags
from pipelines.backends import served_tokens
from pipelines.backends.openai_compat import (
    OpenAIChat,
    OpenAIEmbed,
    OpenAITokens,
)
from pipelines.backends.openai_probe import ServerStatus, normalize_base_url
from pipelines.budget import CONSERVATIVE, budget_for, script_counts
from pipelines.errors import (
    ConfigError,
    ContextOverflowError,
    ModelMissingError,
    ServerAuthError,
    ServerResponseError,
    ServerUnreachableError,
)
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli

BASE = "http://gpu.test:8000/v1"
Handler = Callable[[httpx.Request], httpx.Response]


def completion(text: str = "안녕하세요") -> dict[str, Any]:
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "llama",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }  # fmt: skip


def chat_model(handler: Handler, **more: Any) -> OpenAIChat:
    params: dict[str, Any] = {
        "model": "llama",
        "base_url": BASE,
        "api_key": "sk-from-env",
        "max_retries": 0,
        "http_client": httpx.Client(transport=httpx.MockTransport(handler)),
        "http_socket_options": (),  # no TCP keep-alive probe: this test has no sockets
        **more,
    }
    return OpenAIChat(**params)


def answering(status: int, body: Any) -> Handler:
    return lambda request: httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:8000", "http://localhost:8000/v1"),
        ("http://gpu:8000", "http://gpu:8000/v1"),
        ("http://gpu:8000/v1/", "http://gpu:8000/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080/v1"),
        ("[::1]:8000", "http://[::1]:8000/v1"),
        ("https://example.com", "https://example.com/v1"),
    ],
)
def test_base_urls_are_read_as_people_write_them(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


def test_a_bad_port_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid port"):
        normalize_base_url("http://gpu:80x0")


def test_the_request_carries_the_settings_and_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion())

    model = chat_model(
        handler, temperature=0.3, seed=7, max_tokens=64, stop_sequences=["\n\n"], num_ctx=2048
    )
    assert model.invoke("향가를 한 문장으로 설명해 주세요.").content == "안녕하세요"
    (request,) = seen
    body = json.loads(request.content)
    assert request.url == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-from-env"
    # `max_tokens`, not OpenAI's newer `max_completion_tokens`: servers such as
    # llama-cpp-python's read only the first.
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (64, 0.3, 7)
    assert "max_completion_tokens" not in body
    assert body["stop"] == ["\n\n"]
    assert body["messages"] == [{"role": "user", "content": "향가를 한 문장으로 설명해 주세요."}]


def test_streamed_chunks_arrive_in_order() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        events = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": part}}]}
            for part in ["향가는 ", "신라의 ", "노래다."]
        ]
        body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
        return httpx.Response(200, text=body + "data: [DONE]\n\n",
                              headers={"content-type": "text/event-stream"})  # fmt: skip

    chunks = [c.content for c in chat_model(handler).stream("향가?")]
    assert "".join(chunks) == "향가는 신라의 노래다."


def test_an_empty_stream_is_one_clear_error() -> None:
    """llama-cpp-python's server answers an over-long prompt with 200 and no chunks."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="", headers={"content-type": "text/event-stream"})

    with pytest.raises(ServerResponseError, match="ended the stream") as caught:
        list(chat_model(handler).stream("hi"))
    assert "context window" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (401, {"error": {"message": "Invalid API key sk-fr***"}}, ServerAuthError,
         "$OPENAI_API_KEY"),
        (404, {"error": {"message": "The model `llama` does not exist."}}, ModelMissingError,
         "does not serve 'llama'"),
        (404, {"detail": "Not Found"}, ServerResponseError, "no OpenAI-compatible API"),
        (400, {"error": {"message": "This model's maximum context length is 2048 tokens. "
                                    "However, you requested 3051 tokens"}},
         ContextOverflowError, "maximum context length is 2048"),
        (400, {"error": {"message": "unknown field: foo"}}, ServerResponseError, "unknown field"),
        (503, {"error": {"message": "overloaded"}}, ServerResponseError, "answered 503"),
    ],
)  # fmt: skip
def test_failures_read_as_llamapipe_errors_with_a_next_step(
    status: int, body: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        chat_model(answering(status, body)).invoke("hi")
    assert words in str(caught.value)
    assert "sk-from-env" not in str(caught.value)


def test_a_busy_server_is_tried_again_by_the_client() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(429, json={"error": {"message": "busy"}},
                                  headers={"retry-after-ms": "1"})  # fmt: skip
        return httpx.Response(200, json=completion("ok"))

    assert chat_model(handler, max_retries=3).invoke("hi").content == "ok"
    assert len(calls) == 3


def test_an_unreachable_server_names_how_to_start_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ServerUnreachableError, match="connection refused") as caught:
        chat_model(handler).invoke("hi")
    assert "vllm serve" in (caught.value.hint or "")


def toy_count(text: str) -> int:
    """A tokenizer for the fake server: BOS, 4 ASCII characters a token, 1 per Hangul."""
    a, h, c, o = script_counts(text)
    return 1 + -(-a // 4) + h + 2 * c + o


def calibrating_server(seen: list[httpx.Request], completions: bool = True) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "llama", "max_model_len": 8192}]})
        if request.url.path == "/v1/completions" and completions:
            body = json.loads(request.content)
            assert body["max_tokens"] == 1 and body["model"] == "llama"
            usage = {"prompt_tokens": toy_count(body["prompt"]), "completion_tokens": 1}
            return httpx.Response(200, json={"choices": [{"text": "x"}], "usage": usage})
        return httpx.Response(404, json={"detail": "Not Found"})

    return handler


@pytest.fixture
def offline_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken downloads its encodings on first use: offline that fails, and they are
    OpenAI's tokenizers anyway. Any use of it fails these tests."""

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tiktoken was asked")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setattr(tiktoken, "encoding_for_model", offline)


def with_server(monkeypatch: pytest.MonkeyPatch, handler: Handler) -> None:
    def client(self: OpenAITokens) -> httpx.Client:
        return httpx.Client(base_url=self.host, headers=self._headers,
                            transport=httpx.MockTransport(handler))  # fmt: skip

    monkeypatch.setattr(OpenAITokens, "_client", client)
    served_tokens._shared.clear()


def test_token_rates_are_measured_on_the_server_and_kept(
    offline_tiktoken: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []
    with_server(monkeypatch, calibrating_server(seen))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-calibrate")
    cache = tmp_path / "token-rates.json"
    model = chat_model(answering(200, completion()), num_ctx=4096, max_tokens=256,
                       token_cache=cache)  # fmt: skip
    budget = budget_for(model)
    assert (budget.window, budget.reserve) == (4096, 256)
    english, korean = "word " * 100, "향가는 신라의 노래다 " * 30
    for text, true in ((english, toy_count(english)), (korean, toy_count(korean))):
        estimate = model.get_num_tokens(text)
        assert abs(estimate - true) <= 0.1 * true + 2, (text[:10], estimate, true)
    assert {r.headers["authorization"] for r in seen} == {"Bearer sk-calibrate"}
    assert "sk-calibrate" not in cache.read_text()  # the key is sent, never kept
    probes = len(seen)
    served_tokens._shared.clear()  # a new process reads the kept rates: no probes
    chat_model(answering(200, completion()), token_cache=cache).get_num_tokens("hello")
    assert len(seen) == probes + 1  # one /models look to confirm the identity


def test_without_completions_the_estimate_is_conservative(
    offline_tiktoken: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_server(monkeypatch, calibrating_server([], completions=False))
    model = chat_model(answering(200, completion()))
    budget = budget_for(model)
    english, korean = budget.count("a" * 300), budget.count("가" * 300)
    assert korean > 2 * english > 0  # Hangul costs more tokens per character
    assert korean >= 300 * CONSERVATIVE.hangul  # never under the conservative rate


def test_the_servers_window_caps_num_ctx() -> None:
    model = chat_model(answering(200, completion()), num_ctx=8192, server_window=4096)
    assert model.context_window() == 4096
    assert chat_model(answering(200, completion()), num_ctx=2048).context_window() == 2048


def test_embeddings_send_text_not_token_ids(offline_tiktoken: None) -> None:
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body["input"])
        data = [{"object": "embedding", "index": i, "embedding": [0.5, float(i)]}
                for i in range(len(body["input"]))]  # fmt: skip
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        return httpx.Response(
            200, json={"object": "list", "data": data, "model": "e", "usage": usage}
        )

    embed = OpenAIEmbed(
        model="bge-m3", base_url=BASE, api_key="k", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )  # fmt: skip
    assert embed.embed_documents(["향가", "tea"]) == [[0.5, 0.0], [0.5, 1.0]]
    assert sent == [["향가", "tea"]]


def test_status_says_what_to_fix() -> None:
    with pytest.raises(ServerAuthError, match="OPENAI_API_KEY is not set"):
        ServerStatus(BASE, reachable=True, error="HTTP 401", status_code=401).raise_for_use(
            "OPENAI_API_KEY"
        )
    with pytest.raises(ServerResponseError) as caught:
        ServerStatus("http://gpu:8000/api", True, error="HTTP 404", status_code=404).raise_for_use(
            "OPENAI_API_KEY"
        )
    assert "http://gpu:8000/v1" in (caught.value.hint or "")
    with pytest.raises(ServerUnreachableError):
        ServerStatus(BASE, reachable=False, error="connection refused").raise_for_use("K")


# -- settings and flags ------------------------------------------------------------------------


def test_openai_base_url_is_honoured_and_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gpu:8000/v1")
    settings = load_settings()
    assert settings.openai_base_url == "http://gpu:8000/v1"
    assert settings.origin("openai_base_url") == "env OPENAI_BASE_URL"
    monkeypatch.setenv("LLAMAPIPE_OPENAI_BASE_URL", "http://other:8000")
    assert load_settings().openai_base_url == "http://other:8000"  # ours wins


def test_model_and_host_flags_name_the_chosen_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"backend": "openai", "model": "meta-llama/Llama-3.1-8B-Instruct", "host": "gpu:8000"}
    settings = settings_from_flags(dict(flags))
    assert settings.openai_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert settings.openai_base_url == "gpu:8000"
    assert settings.ollama_model == "llama3.1:8b"  # untouched
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "openai")  # the backend from the environment
    settings = settings_from_flags({"model": "qwen"})
    assert settings.openai_model == "qwen" and settings.origin("openai_model") == "cli"
    monkeypatch.delenv("LLAMAPIPE_BACKEND")
    assert settings_from_flags({"model": "llama3.2:1b"}).ollama_model == "llama3.2:1b"


def test_the_key_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    result = run_cli(capsys, "config", "--json")
    assert result.code == 0
    assert "sk-very-secret-value" not in result.stdout + result.stderr
    rows = {r["name"]: r["value"] for r in result.json()["settings"]}
    assert rows["openai_api_key_env"] == "OPENAI_API_KEY"


# -- ingest embeds batches at once -------------------------------------------------------------


class SlowEmbeddings:
    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.05)
        with self._lock:
            self.in_flight -= 1
        return [[float(len(t)), 1.0] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [float(len(text)), 1.0]


@pytest.mark.parametrize("calls", [1, 4])
def test_ingest_embeds_batches_concurrently(tmp_path: Path, calls: int) -> None:
    from pipelines.rag import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    sentence = "향가는 신라 시대의 노래이며 향찰로 기록되었다. "
    for k in range(16):
        (docs / f"d{k}.txt").write_text(sentence * 120, encoding="utf-8")
    embeddings = SlowEmbeddings()
    index = Index(tmp_path / "index", embeddings=embeddings, embed_model="slow",
                  chunk_size=200, overlap=0, embed_concurrency=calls)  # fmt: skip
    index.ingest([docs])
    chunks = sum(s["chunks"] for s in index.sources())
    assert chunks > 4 * 64  # more batches than calls at once
    assert embeddings.most == calls
    assert index._backfill_vectors() == 0  # every chunk already has its vector
