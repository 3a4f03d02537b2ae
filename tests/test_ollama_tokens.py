"""Token budgets over Ollama's HTTP API: calibrated counts checked against prompt_eval_count,
the window, refusing what cannot fit, and truncation that is never silent (our protocol
server cuts a prompt as Ollama does; with --real-ollama the tests that need no fault
injection run against a real server)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from evals.runner import read_results, run_spec
from evals.spec import load_spec
from pipelines.backends import TOKEN_RATES_FILE, load_backend, served_tokens
from pipelines.budget import budget_for
from pipelines.errors import ContextOverflowError, PromptTruncatedWarning
from pipelines.rag import RAG, Index
from pipelines.settings import Settings, load_settings
from tests.conftest import TEST_MODEL, OllamaTarget
from tests.corpora import hyangga_corpus
from tests.ollama_server import OllamaProtocolServer

pytestmark = [pytest.mark.ollama, pytest.mark.slow]

KOREAN = "처용가는 신라 헌강왕 때 처용이 지었다고 전하는 향가이다. " * 6
MIXED = "The Samguk yusa keeps fourteen hyangga. " * 4 + KOREAN + "東京明期月良夜入伊遊行如可" * 3


@pytest.fixture(autouse=True)
def fresh_calibrations() -> Iterator[None]:
    """Each test starts as a new process would: nothing counted in memory yet."""
    served_tokens._shared.clear()
    yield
    served_tokens._shared.clear()


def settings_for(url: str, model: str, **more: object) -> Settings:
    return load_settings(
        {"backend": "ollama", "ollama_host": url, "ollama_model": model, "max_tokens": 32, **more}
    )


def evaluated(url: str, model: str, messages: list[dict[str, str]]) -> int:
    body = {"model": model, "messages": messages, "stream": False,
            "options": {"num_predict": 1, "temperature": 0, "num_ctx": 8192}}  # fmt: skip
    return int(httpx.post(f"{url}/api/chat", json=body, timeout=120).json()["prompt_eval_count"])


# -- calibration --------------------------------------------------------------------------


def test_calibrated_counts_match_what_the_server_reads(ollama_target: OllamaTarget) -> None:
    backend = load_backend(settings_for(ollama_target.url, ollama_target.model))
    for text in (KOREAN, MIXED, "What is the capital of France? " * 10):
        messages = [SystemMessage("Answer briefly."), HumanMessage(text)]
        estimate = backend.chat.get_num_tokens_from_messages(messages)
        actual = evaluated(
            ollama_target.url,
            ollama_target.model,
            [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
        )
        assert abs(estimate - actual) <= 0.15 * actual + 8, (text[:20], estimate, actual)


def test_calibration_is_kept_and_reused_by_the_next_process(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    settings = settings_for(ollama_target.url, ollama_target.model)
    load_backend(settings).chat.get_num_tokens("처용가")
    probes = [body for path, body in test_server.requests if path == "/api/generate"]
    assert len(probes) == 4 and all(b["raw"] and b["options"]["num_predict"] == 1 for b in probes)
    kept = json.loads((settings.cache_dir / TOKEN_RATES_FILE).read_text())
    (entry,) = kept.values()
    assert entry["rates"]["hangul"] > 1.5, "SmolLM2 spends 2-3 tokens per Hangul syllable"

    served_tokens._shared.clear()  # a new process
    test_server.clear()
    load_backend(settings).chat.get_num_tokens("처용가")
    assert not [p for p, _ in test_server.requests if p == "/api/generate"], "no probe again"


def test_the_window_is_num_ctx_capped_at_the_models_own_length(
    ollama_target: OllamaTarget,
) -> None:
    chat = load_backend(settings_for(ollama_target.url, ollama_target.model, num_ctx=1024)).chat
    assert budget_for(chat).window == 1024
    big = load_backend(settings_for(ollama_target.url, ollama_target.model, num_ctx=1 << 20))
    show = httpx.post(f"{ollama_target.url}/api/show", json={"model": ollama_target.model}).json()
    arch = show["model_info"]["general.architecture"]
    assert budget_for(big.chat).window == show["model_info"][f"{arch}.context_length"]


# -- before sending: refuse what cannot fit, keep the answer inside the window --------------


def test_a_prompt_that_cannot_fit_is_refused_before_it_is_sent(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    chat = load_backend(settings_for(ollama_target.url, ollama_target.model, num_ctx=1024)).chat
    test_server.clear()
    with pytest.raises(ContextOverflowError) as caught:
        chat.invoke(KOREAN * 10)
    assert "--num-ctx" in (caught.value.hint or "") and "1024-token" in caught.value.message
    assert not [p for p, _ in test_server.requests if p == "/api/chat"], "nothing was sent"


def test_the_answer_is_kept_inside_the_window(
    ollama_target: OllamaTarget, test_server: OllamaProtocolServer
) -> None:
    settings = settings_for(ollama_target.url, ollama_target.model, num_ctx=1024, max_tokens=900)
    chat = load_backend(settings).chat
    test_server.clear()
    chat.invoke(KOREAN)
    (body,) = [b for p, b in test_server.requests if p == "/api/chat"]
    estimate = chat.get_num_tokens_from_messages([HumanMessage(KOREAN)])
    assert body["options"]["num_predict"] <= 1024 - estimate < 900, "no context shift mid-answer"


# -- after: a prompt the server cut is never silent --------------------------------------------


@pytest.fixture
def cutting_server(gguf_path: Path) -> Iterator[OllamaProtocolServer]:
    """A server that loads the model with a 1,024-token window whatever a request asks."""
    with OllamaProtocolServer({TEST_MODEL: gguf_path}, max_ctx=1024) as server:
        yield server


def test_a_prompt_the_server_cut_is_reported(cutting_server: OllamaProtocolServer) -> None:
    chat = load_backend(settings_for(cutting_server.url, TEST_MODEL, num_ctx=4096)).chat
    prompt = [HumanMessage(KOREAN * 3)]  # about 1,200 tokens: fits 4,096, not 1,024
    with pytest.warns(PromptTruncatedWarning, match="num_ctx 4096") as caught:
        reply = chat.invoke(prompt)
    (ours,) = [w.message for w in caught if isinstance(w.message, PromptTruncatedWarning)]
    assert "--num-ctx" in ours.hint
    note = reply.response_metadata["prompt_truncated"]
    assert note["evaluated"] == 1024 // 2 + 2 and note["sent_estimate"] > 1024
    with pytest.warns(PromptTruncatedWarning):
        chunks = list(chat.stream(prompt))
    assert any("prompt_truncated" in c.response_metadata for c in chunks)


def test_a_prompt_that_fits_raises_no_alarm(cutting_server: OllamaProtocolServer) -> None:
    """Near the window too: reading most of it is not a sign of a cut."""
    chat = load_backend(settings_for(cutting_server.url, TEST_MODEL, num_ctx=1024)).chat
    sentence = "처용가는 신라의 향가이다. "
    n = 1
    while chat.get_num_tokens_from_messages([HumanMessage(sentence * (n + 1))]) < 0.85 * 1024:
        n += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        for text in (sentence, sentence * n):
            reply = chat.invoke(text)
            assert "prompt_truncated" not in reply.response_metadata
            assert reply.usage_metadata and reply.usage_metadata["input_tokens"] <= 1024


def test_a_server_that_refuses_a_long_prompt_is_one_clear_error(gguf_path: Path) -> None:
    with OllamaProtocolServer({TEST_MODEL: gguf_path}, max_ctx=1024, overflow="refuse") as server:
        chat = load_backend(settings_for(server.url, TEST_MODEL, num_ctx=4096)).chat
        with pytest.raises(ContextOverflowError, match="refused the prompt"):
            chat.invoke(KOREAN * 3)


def test_an_eval_records_each_cut_prompt(
    cutting_server: OllamaProtocolServer, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"id": "short", "source": "東京明期月良", "references": ["서라벌 밝은 달"]},
        {"id": "long", "source": "東京明期月良夜入伊遊行如可 " * 40, "references": ["서라벌"]},
    ]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        f"name: cut\ndataset: {data}\nsystems: [{{name: zero, prompt: hyangga/zero_shot}}]\n"
        "metrics: [chrf]\n",
        encoding="utf-8",
    )
    settings = settings_for(cutting_server.url, TEST_MODEL, num_ctx=4096)
    run_spec(load_spec(spec_path), tmp_path / "runs", settings=settings,
             backend_factory=load_backend)  # fmt: skip
    results = {r["id"]: r for r in read_results(next(tmp_path.glob("runs/*/results.jsonl")))}
    assert "num_ctx 4096" in results["long"]["prompt_truncated"]
    assert "prompt_truncated" not in results["short"]
    # a re-run answers from the cache, and still says so
    run_spec(load_spec(spec_path), tmp_path / "runs2", settings=settings,
             backend_factory=load_backend)  # fmt: skip
    again = {r["id"]: r for r in read_results(next(tmp_path.glob("runs2/*/results.jsonl")))}
    assert again["long"]["cached"] and again["long"]["prompt_truncated"]


# -- RAG over HTTP ------------------------------------------------------------------------------


def test_korean_rag_over_ollama_fits_the_window(
    ollama_target: OllamaTarget, tmp_path: Path
) -> None:
    hyangga_corpus(tmp_path / "docs")
    index = Index(tmp_path / "index")
    index.ingest([tmp_path / "docs"])
    chat = load_backend(settings_for(ollama_target.url, ollama_target.model, num_ctx=2048)).chat
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)  # a cut prompt fails the test
        answer = RAG(model=chat, index=index, k=5).invoke("처용가는 누가 지었나요?")
    assert answer.passages_dropped + answer.passages_trimmed >= 1
    sent = [r for r in answer.retrieved if r.in_prompt]
    assert sent and Path(sent[0].source).name == "hyangga-00.txt"
