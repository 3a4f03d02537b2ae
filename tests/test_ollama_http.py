"""The Ollama path over real HTTP: our Ollama-protocol server on loopback (backed by the
embedded model), or a real Ollama with `make test-ollama` (`--real-ollama`)."""

from __future__ import annotations

import time

import ollama
import pytest

from pipelines.backends import Backend, choose_backend, load_backend
from pipelines.backends.ollama import OllamaChat
from pipelines.backends.ollama_probe import probe
from pipelines.errors import (
    ModelTimeoutError,
    OllamaModelMissingError,
    OllamaResponseError,
    OllamaUnreachableError,
)
from pipelines.settings import Settings, load_settings
from tests.conftest import OllamaTarget
from tests.ollama_server import Fault, OllamaProtocolServer, refused_url

pytestmark = [pytest.mark.ollama, pytest.mark.slow]


def settings_for(target: OllamaTarget, **more: object) -> Settings:
    return load_settings(
        {
            "backend": "ollama",
            "ollama_host": target.url,
            "ollama_model": target.model,
            "max_tokens": 32,
            **more,
        }
    )


@pytest.fixture
def backend(ollama_target: OllamaTarget) -> Backend:
    return load_backend(settings_for(ollama_target))


# -- the project's backend -------------------------------------------------------------------


def test_probe_reads_version_and_tags(ollama_target: OllamaTarget) -> None:
    status = probe(ollama_target.url, timeout=5)
    assert status.reachable and status.version
    assert status.has_model(ollama_target.model)


def test_chat_invoke_and_stream_agree(backend: Backend) -> None:
    assert isinstance(backend.chat, OllamaChat)
    reply = backend.chat.invoke("Say hello in one short sentence.")
    assert isinstance(reply.content, str) and reply.content.strip()
    chunks = [c.content for c in backend.chat.stream("Say hello in one short sentence.")]
    assert len(chunks) > 1
    assert "".join(chunks) == reply.content  # temperature 0 + seed: same answer


def test_korean_over_http(backend: Backend) -> None:
    reply = backend.chat.invoke("안녕하세요! 한 문장으로 자기소개 해 주세요.")
    assert isinstance(reply.content, str) and reply.content.strip()
    assert "\ufffd" not in reply.content


def test_generation_settings_reach_the_server(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    settings = settings_for(ollama_target, temperature=0.7, seed=42, num_ctx=2048, stop=["\n\n"])
    load_backend(settings).chat.invoke("hi")
    path, body = test_server.requests[-1]
    assert path == "/api/chat"
    options = body["options"]
    assert (options["temperature"], options["seed"], options["num_predict"]) == (0.7, 42, 32)
    assert (options["num_ctx"], options["stop"]) == (2048, ["\n\n"])


def test_completion_form_goes_raw_through_generate(
    backend: Backend, ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    text = backend.completion.invoke("1, 2, 3, 4,")
    assert text.strip()
    path, body = test_server.requests[-1]
    assert path == "/api/generate" and body["raw"] is True


def test_embeddings_when_the_embed_model_is_there(ollama_target: OllamaTarget) -> None:
    settings = settings_for(ollama_target, ollama_embed_model=ollama_target.model)
    embeddings = load_backend(settings).embeddings
    assert embeddings is not None
    vectors = embeddings.embed_documents(["hello", "안녕하세요"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 0
    norm = sum(x * x for x in vectors[0]) ** 0.5
    assert abs(norm - 1) < 1e-3


def test_no_embeddings_when_the_embed_model_is_missing(ollama_target: OllamaTarget) -> None:
    settings = settings_for(ollama_target, ollama_embed_model="no-such-embedder:1")
    assert load_backend(settings).embeddings is None


# -- the ollama client itself ----------------------------------------------------------------


def test_ollama_client_speaks_to_it(ollama_target: OllamaTarget) -> None:
    client = ollama.Client(host=ollama_target.url, timeout=60)
    names = [m.model for m in client.list().models]
    assert ollama_target.model in names
    shown = client.show(ollama_target.model)
    assert shown.details and shown.details.family
    options = {"temperature": 0, "seed": 1, "num_predict": 16}
    chat = client.chat(
        ollama_target.model, messages=[{"role": "user", "content": "Hi!"}], options=options
    )
    assert chat.message.content and chat.done and chat.eval_count
    parts = list(
        client.chat(
            ollama_target.model,
            messages=[{"role": "user", "content": "Hi!"}],
            options=options,
            stream=True,
        )
    )
    assert (
        parts[-1].done and "".join(p.message.content or "" for p in parts) == chat.message.content
    )
    generated = client.generate(ollama_target.model, prompt="The sky is", options=options)
    assert generated.response and generated.done
    embedded = client.embed(ollama_target.model, input=["a", "b"])
    assert len(embedded.embeddings) == 2
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("no-such-model:1", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404


# -- auto --------------------------------------------------------------------------------------


def test_auto_chooses_ollama_when_it_has_the_model(ollama_target: OllamaTarget) -> None:
    settings = settings_for(ollama_target).model_copy(update={"backend": "auto"})
    name, reason, _ = choose_backend(settings)
    assert name == "ollama" and ollama_target.url in reason


def test_auto_never_answers_a_named_model_with_another(ollama_target: OllamaTarget) -> None:
    """Over real HTTP: a model or server the user named is not swapped for the embedded one
    (auto falls back only when nothing was named: tests/test_backends.py)."""
    settings = load_settings(
        {"backend": "auto", "ollama_host": ollama_target.url, "ollama_model": "not-pulled:1"}
    )
    with pytest.raises(OllamaModelMissingError) as missing:
        load_backend(settings)
    assert "ollama pull not-pulled:1" in (missing.value.hint or "")
    assert "--backend embedded" in (missing.value.hint or "")
    with pytest.raises(OllamaUnreachableError, match="refused"):
        choose_backend(load_settings({"ollama_host": refused_url()}))


# -- failures, injected ------------------------------------------------------------------------


def test_refused_connection_names_the_host_and_the_way_out() -> None:
    url = refused_url()
    with pytest.raises(OllamaUnreachableError) as info:
        load_backend(load_settings({"backend": "ollama", "ollama_host": url}))
    assert url in info.value.message
    assert "ollama serve" in (info.value.hint or "") and "--backend embedded" in (
        info.value.hint or ""
    )


def test_server_gone_after_choice_is_still_a_clear_error(ollama_target: OllamaTarget) -> None:
    chat = OllamaChat(model=ollama_target.model, base_url=refused_url())
    with pytest.raises(OllamaUnreachableError, match="cannot reach Ollama"):
        chat.invoke("hi")


def test_model_not_pulled_says_ollama_pull(ollama_target: OllamaTarget) -> None:
    with pytest.raises(OllamaModelMissingError) as info:
        load_backend(settings_for(ollama_target, ollama_model="llama3.1:8b-missing"))
    assert "ollama pull llama3.1:8b-missing" in (info.value.hint or "")
    chat = OllamaChat(model="llama3.1:8b-missing", base_url=ollama_target.url)
    with pytest.raises(OllamaModelMissingError, match="not pulled"):
        chat.invoke("hi")


def _chats(server: OllamaProtocolServer) -> int:
    return sum(path == "/api/chat" for path, _ in server.requests)


def test_server_error_500_after_the_retries(
    backend: Backend, test_server: OllamaProtocolServer
) -> None:
    test_server.clear()
    test_server.inject(Fault("status", path="/api/chat", status=500, times=4))
    with pytest.raises(OllamaResponseError, match="answered 500") as info:
        backend.chat.invoke("hi")
    assert "server log" in (info.value.hint or "")
    assert _chats(test_server) == 4, "the first try and 3 retries (LLAMAPIPE_RETRIES)"
    assert backend.chat.invoke("hi").content  # the next request works again


def test_a_busy_server_is_tried_again(backend: Backend, test_server: OllamaProtocolServer) -> None:
    """503 twice, then an answer: the caller sees only the answer."""
    test_server.clear()
    test_server.inject(Fault("status", path="/api/chat", status=503, times=2))
    assert backend.chat.invoke("hi").content
    assert _chats(test_server) == 3


def test_a_bad_request_is_not_tried_again(
    backend: Backend, test_server: OllamaProtocolServer
) -> None:
    test_server.clear()
    test_server.inject(Fault("status", path="/api/chat", status=400))
    with pytest.raises(OllamaResponseError, match="answered 400"):
        backend.chat.invoke("hi")
    assert _chats(test_server) == 1


def test_an_answer_cut_off_is_asked_again_when_nothing_was_shown(
    backend: Backend, test_server: OllamaProtocolServer
) -> None:
    """invoke collects the whole answer before returning, so a cut stream is simply retried."""
    test_server.clear()
    test_server.inject(Fault("cut", path="/api/chat", after=2))
    assert backend.chat.invoke("Tell me a story about a cat.").content
    assert _chats(test_server) == 2


def test_slow_first_byte_within_the_timeout_is_fine(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    backend = load_backend(settings_for(ollama_target, timeout=5))
    test_server.inject(Fault("slow", path="/api/chat", delay=0.5))
    started = time.perf_counter()
    assert backend.chat.invoke("hi").content
    assert time.perf_counter() - started >= 0.5


def test_slow_first_byte_past_the_timeout(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    backend = load_backend(settings_for(ollama_target, timeout=0.3))
    test_server.inject(Fault("slow", path="/api/chat", delay=1.0))
    with pytest.raises(ModelTimeoutError, match=r"within 0\.3 s") as info:
        backend.chat.invoke("hi")
    assert "LLAMAPIPE_TIMEOUT" in (info.value.hint or "")


def test_stream_cut_mid_way(backend: Backend, test_server: OllamaProtocolServer) -> None:
    test_server.inject(Fault("cut", path="/api/chat", after=3))
    received = []
    with pytest.raises(OllamaResponseError, match="broke off mid-answer"):
        for chunk in backend.chat.stream("Tell me a story about a cat."):
            received.append(chunk.content)
    assert len(received) == 3, "the chunks before the cut arrived"
