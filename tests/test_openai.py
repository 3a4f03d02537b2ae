"""The OpenAI-compatible backend over real HTTP: llama-cpp-python's own server
(`python -m llama_cpp.server`, a server this project did not write) on loopback, or any
server with `make test-openai URL=...` (`--openai-url`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.backends import Backend, load_backend, load_embeddings
from pipelines.backends.openai_compat import OpenAIChat, OpenAICompletion, OpenAIEmbed
from pipelines.errors import ModelMissingError, ServerAuthError, ServerResponseError
from pipelines.settings import Settings, load_settings
from tests.cli_helpers import run_cli
from tests.conftest import OpenAITarget
from tests.ollama_server import refused_url

pytestmark = [pytest.mark.openai, pytest.mark.slow]
DATASETS = Path(__file__).parent.parent / "evals" / "datasets"
CORPUS = DATASETS / "rag" / "corpus"


def settings_for(target: OpenAITarget, **more: object) -> Settings:
    return load_settings(
        {
            "backend": "openai",
            "openai_base_url": target.url,
            "openai_model": target.model,
            "max_tokens": 24,
            **more,
        }
    )


def flags(target: OpenAITarget) -> list[str]:
    return ["--backend", "openai", "--host", target.url, "--model", target.model]


@pytest.fixture
def backend(openai_target: OpenAITarget) -> Backend:
    return load_backend(settings_for(openai_target))


@pytest.fixture
def embed_target(openai_target: OpenAITarget) -> OpenAITarget:
    if not openai_target.embed_model:
        pytest.skip("--openai-url: set LLAMAPIPE_TEST_OPENAI_EMBED_MODEL to test embeddings")
    return openai_target


# -- the library -----------------------------------------------------------------------------


def test_chat_invoke_and_stream_agree(backend: Backend) -> None:
    assert backend.name == "openai" and isinstance(backend.chat, OpenAIChat)
    # llama-cpp-python's server answers a prompt it has not cached slightly differently
    # (one batch vs. reused cache): ask once first, so both answers below share its cache.
    backend.chat.invoke("Say hello in one short sentence.")
    reply = backend.chat.invoke("Say hello in one short sentence.")
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] <= 24
    chunks = [c.content for c in backend.chat.stream("Say hello in one short sentence.")]
    assert len([c for c in chunks if c]) > 1
    assert "".join(chunks) == reply.content  # temperature 0 + seed: same answer


async def test_async_chat_and_abatch(backend: Backend) -> None:
    replies = await backend.chat.abatch(
        ["Say hi.", "안녕이라고 말해 주세요."], {"max_concurrency": 2}
    )
    assert all(isinstance(r.content, str) and r.content.strip() for r in replies)
    chunks = [c.content async for c in backend.chat.astream("Say hi.")]
    assert "".join(chunks).strip()


def test_korean_over_http(backend: Backend) -> None:
    reply = backend.chat.invoke("안녕하세요! 한 문장으로 자기소개 해 주세요.")
    assert isinstance(reply.content, str) and reply.content.strip()
    assert "\ufffd" not in reply.content


def test_completion_form(backend: Backend) -> None:
    assert isinstance(backend.completion, OpenAICompletion)
    text = backend.completion.invoke("1, 2, 3, 4,")
    assert isinstance(text, str) and text.strip()


@pytest.mark.parametrize(
    "prompt",
    ["Explain in detail how the committee reviewed the library budget. " * 6,
     "향가는 신라 시대에 향찰로 기록된 노래로, 삼국유사에 열네 수가 전한다. " * 6],
)  # fmt: skip
def test_token_estimates_match_what_the_server_read(backend: Backend, prompt: str) -> None:
    """Rates measured on the server (four one-token completions) estimate a chat prompt
    within the budget's 10% margin, in English and in Korean (2-3x the tokens per character
    for SmolLM2), without tiktoken."""
    from langchain_core.messages import HumanMessage

    estimate = backend.chat.get_num_tokens_from_messages([HumanMessage(content=prompt)])
    reply = load_backend(settings_for_backend(backend, max_tokens=1)).chat.invoke(prompt)
    assert reply.usage_metadata is not None
    read = reply.usage_metadata["input_tokens"]
    assert abs(estimate - read) <= 0.1 * read, (estimate, read)


def settings_for_backend(backend: Backend, **more: object) -> Settings:
    chat = backend.chat
    assert isinstance(chat, OpenAIChat)
    return load_settings({"backend": "openai", "openai_base_url": chat.openai_api_base,
                          "openai_model": backend.model, **more})  # fmt: skip


def test_max_tokens_reaches_the_server(openai_target: OpenAITarget) -> None:
    reply = load_backend(settings_for(openai_target, max_tokens=3)).chat.invoke(
        "Write a long story about the sea."
    )
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] <= 3
    assert reply.response_metadata["finish_reason"] == "length"


def test_embeddings_for_dense_retrieval(embed_target: OpenAITarget) -> None:
    settings = settings_for(embed_target, openai_embed_model=embed_target.embed_model)
    embeddings, name, why = load_embeddings(settings)
    assert isinstance(embeddings, OpenAIEmbed) and name == embed_target.embed_model
    assert embed_target.url in why
    vectors = embeddings.embed_documents(["향가는 신라의 노래다.", "Green tea is steamed."])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 8
    assert isinstance(vectors[0][0], float)
    assert len(embeddings.embed_query("향가")) == len(vectors[0])


def test_embeddings_can_live_on_another_server(embed_target: OpenAITarget) -> None:
    """vLLM serves one model per process: the embedding model has its own base URL."""
    settings = settings_for(
        embed_target,
        openai_base_url=refused_url(),  # the chat server is not needed for embeddings
        openai_embed_base_url=embed_target.url,
        openai_embed_model=embed_target.embed_model,
    )
    embeddings, _, why = load_embeddings(settings)
    assert embeddings is not None and embed_target.url in why
    assert len(embeddings.embed_query("향가")) > 8


def test_a_wrong_key_is_refused_without_printing_it(
    openai_target: OpenAITarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not openai_target.key:
        pytest.skip("this server takes no API key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0123456789")
    with pytest.raises(ServerAuthError) as caught:
        load_backend(settings_for(openai_target))
    assert "$OPENAI_API_KEY" in str(caught.value)
    assert "sk-wrong" not in str(caught.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ServerAuthError, match="OPENAI_API_KEY is not set"):
        load_backend(settings_for(openai_target))


def test_the_key_variable_can_be_named(
    openai_target: OpenAITarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not openai_target.key:
        pytest.skip("this server takes no API key")
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("MY_VLLM_KEY", openai_target.key)
    backend = load_backend(settings_for(openai_target, openai_api_key_env="MY_VLLM_KEY"))
    assert backend.chat.invoke("hi").content


def test_an_unknown_model_lists_the_served_ones(openai_target: OpenAITarget) -> None:
    with pytest.raises(ModelMissingError) as caught:
        load_backend(settings_for(openai_target, openai_model="llama3.1:8b"))
    assert openai_target.model in caught.value.message
    assert "--model" in (caught.value.hint or "")


def test_no_model_named_means_the_first_served(openai_target: OpenAITarget) -> None:
    backend = load_backend(
        load_settings({"backend": "openai", "openai_base_url": openai_target.url})
    )
    assert backend.model and "first" in backend.reason


def test_a_base_url_without_v1_is_completed(openai_target: OpenAITarget) -> None:
    root = openai_target.url.removesuffix("/v1")
    if root == openai_target.url:
        pytest.skip("this server's API is not at /v1")
    backend = load_backend(settings_for(openai_target, openai_base_url=root.split("://")[1]))
    assert backend.chat.invoke("hi").content


def test_a_path_that_is_not_the_api_says_so(openai_target: OpenAITarget) -> None:
    root = openai_target.url.removesuffix("/v1")
    with pytest.raises(ServerResponseError) as caught:
        load_backend(settings_for(openai_target, openai_base_url=f"{root}/api"))
    assert f"{root}/v1" in (caught.value.hint or "")


# -- the CLI ---------------------------------------------------------------------------------


def test_models_lists_the_servers_models(
    openai_target: OpenAITarget, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_target.url)
    result = run_cli(capsys, "models", "--json")
    assert result.code == 0, result.stderr
    served = json.loads(result.stdout)["openai"]
    assert served["reachable"] and served["base_url"] == openai_target.url
    assert openai_target.model in [m["id"] for m in served["models"]]
    assert openai_target.key == "" or openai_target.key not in result.stdout
    text = run_cli(capsys, "models")
    assert openai_target.model in text.stdout and openai_target.url in text.stdout


def test_chat_streams_through_the_cli(
    openai_target: OpenAITarget, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "chat", *flags(openai_target), "--max-tokens", "16", "향가란?")
    assert result.code == 0, result.stderr
    assert result.stdout.strip()
    assert "backend: openai" in result.stderr


def test_cli_errors_name_the_next_step(
    openai_target: OpenAITarget, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = run_cli(capsys, "chat", "--backend", "openai", "--host", refused_url(), "hi")
    assert refused.code == 4
    assert "cannot reach an OpenAI-compatible server" in refused.stderr
    assert "vllm serve" in refused.stderr and "Traceback" not in refused.stderr
    unknown = run_cli(capsys, "chat", "--backend", "openai", "--host", openai_target.url,
                      "--model", "no-such-model", "hi")  # fmt: skip
    assert unknown.code == 4 and openai_target.model in unknown.stderr
    if openai_target.key:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-0123456789")
        refused_key = run_cli(capsys, "chat", *flags(openai_target), "hi")
        assert refused_key.code == 4 and "$OPENAI_API_KEY" in refused_key.stderr
        assert "sk-wrong" not in refused_key.stderr + refused_key.stdout


@pytest.fixture
def openai_env(openai_target: OpenAITarget, monkeypatch: pytest.MonkeyPatch) -> OpenAITarget:
    """The server as the commands without model flags (ingest, eval run) find it: settings."""
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "openai")
    monkeypatch.setenv("LLAMAPIPE_OPENAI_BASE_URL", openai_target.url)
    monkeypatch.setenv("LLAMAPIPE_OPENAI_MODEL", openai_target.model)
    return openai_target


def test_rag_with_dense_retrieval_over_the_server(
    embed_target: OpenAITarget,
    openai_env: OpenAITarget,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_OPENAI_EMBED_MODEL", embed_target.embed_model)
    index = str(tmp_path / "index")
    ingest = run_cli(capsys, "rag", "ingest", str(CORPUS), "--index", index)
    assert ingest.code == 0, ingest.stderr
    assert "dense retrieval: " + embed_target.embed_model in ingest.stderr
    ask = run_cli(capsys, "rag", "ask", "Who published a reading of the hyangga in 1929?",
                  "--index", index, "--json", "--max-tokens", "48")  # fmt: skip
    assert ask.code == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert answer["backend"] == "openai" and answer["model"] == embed_target.model
    assert any("hyangchal" in r["source"] for r in answer["retrieved"])


def test_eval_runs_concurrently_against_the_server(
    openai_env: OpenAITarget, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = (DATASETS / "hyangga.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    (tmp_path / "four.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: served\ndataset: four.jsonl\nsystems:\n"
        "  - {name: zero, prompt: hyangga/zero_shot, params: {max_tokens: 16}}\n"
        "  - {name: two, prompt: hyangga/few_shot, shots: 2, params: {max_tokens: 16}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "runs"
    result = run_cli(capsys, "eval", "run", str(spec), "--out", str(out), "-j", "3", "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert {name: system["model_calls"] for name, system in summary["systems"].items()} == {
        "zero": 4,
        "two": 4,
    }  # every item asked of the server (LLAMAPIPE_BACKEND=openai has no fallback)
