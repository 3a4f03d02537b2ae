"""The token budget: counting, RAG packing within the window, overflow errors that name
--num-ctx, and the embedded model's exact counts (no internal error for a long input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from pipelines import load_backend, load_settings
from pipelines.budget import CONSERVATIVE, Budget, budget_for, script_counts
from pipelines.errors import ContextOverflowError
from pipelines.rag import RAG, Index
from pipelines.rag.chunking import sentence_spans
from tests.cli_helpers import run_cli
from tests.corpora import hyangga_corpus
from tests.fakes import ScriptedChat, ScriptedLLM


@pytest.fixture(scope="module")
def korean_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    root = tmp_path_factory.mktemp("korean")
    hyangga_corpus(root / "docs")
    index = Index(root / "index")
    index.ingest([root / "docs"])
    return index


# -- counting -------------------------------------------------------------------------------


def test_script_counts_split_ascii_hangul_cjk_and_the_rest() -> None:
    assert script_counts("ab 처용 東京 é") == (5, 2, 2, 1)  # three spaces


def test_an_unknown_model_gets_conservative_counts_and_its_declared_window() -> None:
    model = ScriptedChat(["x"], num_ctx=1000, max_tokens=100)
    budget = budget_for(model)
    assert (budget.window, budget.reserve, budget.limit, budget.exact) == (1000, 100, 900, False)
    korean = "처용가는 누가 지었나요?"
    # 3 tokens per syllable, 8 per message and prompt, then the 10% margin on estimates
    expected = int((8 + 8 + CONSERVATIVE.text(korean)) * 1.1 + 0.999)
    assert budget.count(korean) == expected
    assert budget_for(ScriptedChat(["x"])).window is None, "no window declared: no limit"


def test_the_reserve_for_the_answer_is_at_most_half_the_window() -> None:
    assert budget_for(ScriptedChat(["x"], num_ctx=1000, max_tokens=4000)).reserve == 500


def test_require_names_num_ctx_when_a_prompt_cannot_fit() -> None:
    budget = budget_for(ScriptedChat(["x"], num_ctx=300, max_tokens=50))
    with pytest.raises(ContextOverflowError) as caught:
        budget.require("처용가 " * 200, "the chat input")
    assert "--num-ctx" in (caught.value.hint or "")
    assert "the chat input is" in caught.value.message and "300-token" in caught.value.message


# -- RAG packing ------------------------------------------------------------------------------


def _limited_rag(index: Index, window: int, reply: str = "처용이 지었다 [1].", k: int = 5) -> RAG:
    return RAG(model=ScriptedChat([reply], num_ctx=window, max_tokens=256), index=index, k=k)


def test_rag_packs_passages_best_first_until_the_window_is_full(korean_index: Index) -> None:
    rag = _limited_rag(korean_index, window=4096)
    prepared = rag.prepare("처용가는 누가 지었나요?")
    budget = budget_for(rag.model)
    assert prepared.prompt is not None and budget.fits(prepared.prompt)
    assert prepared.dropped + prepared.trimmed >= 1, "five Korean chunks cannot all fit"
    in_prompt = [r for r in prepared.retrieved if r.in_prompt]
    assert [r.n for r in in_prompt] == list(range(1, len(in_prompt) + 1))
    assert all(r.in_prompt for r in prepared.retrieved[: len(in_prompt)]), "best first"
    assert len(prepared.retrieved) >= 3, "the poem's chunks are all relevant"


def test_a_trimmed_passage_ends_at_a_sentence_and_quotes_stay_exact(korean_index: Index) -> None:
    for window in range(1200, 4200, 500):  # whatever the window, the prompt fits
        rag = _limited_rag(korean_index, window=window, reply="처용이 지었다고 전한다 [1].")
        answer = rag.invoke("처용가는 누가 지었나요?")
        prepared = rag.prepare("처용가는 누가 지었나요?")
        assert prepared.prompt is not None and budget_for(rag.model).fits(prepared.prompt)
        for r in prepared.retrieved:
            if r.trimmed:
                text = korean_index.document_text(r.source)
                ends = {r.start + end for _, end in sentence_spans(text[r.start : r.start + 800])}
                assert r.end in ends, "cut at a sentence end"
        for c in answer.citations:
            assert korean_index.document_text(c.source)[c.start : c.end] == c.quote
        assert answer.passages_dropped == prepared.dropped
        assert answer.to_json()["passages_dropped"] == prepared.dropped


def test_rag_says_when_not_even_the_question_fits(korean_index: Index) -> None:
    rag = _limited_rag(korean_index, window=300)
    with pytest.raises(ContextOverflowError) as caught:
        rag.invoke("처용가는 누가 지었나요? " * 20)
    assert "--num-ctx" in (caught.value.hint or "")


def test_completion_models_are_packed_by_their_raw_prompt(korean_index: Index) -> None:
    model = ScriptedLLM(["처용이 지었다 [1]."], num_ctx=2048, max_tokens=128)
    rag = RAG(model=model, index=korean_index, k=5)
    prepared = rag.prepare("처용가는 누가 지었나요?")
    assert prepared.prompt is not None
    assert budget_for(model).fits(prepared.prompt.to_string())
    assert prepared.dropped + prepared.trimmed >= 1


def test_an_explicit_budget_overrides_the_models(korean_index: Index) -> None:
    model = ScriptedChat(["x [1]."])
    tight = Budget(window=1500, reserve=100, counter=lambda p: len(str(p)), exact=True)
    prepared = RAG(model=model, index=korean_index, budget=tight).prepare("처용가는 누가 지었나요?")
    assert prepared.prompt is not None and len(str(prepared.prompt)) <= 1400


# -- the embedded model: exact counts, and long inputs -------------------------------------


@pytest.mark.slow
def test_embedded_counts_are_exactly_what_it_reads(gguf_path: Path) -> None:
    backend = load_backend(load_settings({"backend": "embedded", "max_tokens": 8}))
    messages = [SystemMessage("Answer briefly."), HumanMessage("처용가는 누가 지었나요?")]
    counted = backend.chat.get_num_tokens_from_messages(messages)
    reply = backend.chat.invoke(messages)
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == counted
    budget = budget_for(backend.chat)
    assert budget.exact and budget.window == 4096 and budget.reserve == 8


@pytest.mark.slow
def test_embedded_streams_carry_usage_on_the_last_chunk() -> None:
    backend = load_backend(load_settings({"backend": "embedded", "max_tokens": 12}))
    chunks = list(backend.chat.stream("Say hello."))
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1, "one chunk carries it, so adding chunks up counts it once"
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    usage = whole.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 12
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.slow
def test_a_long_input_is_one_line_naming_num_ctx_not_an_internal_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long_text = "처용가는 신라의 향가이다. " * 400  # about 6,000 SmolLM2 tokens
    r = run_cli(capsys, "chat", long_text, "--backend", "embedded", "--num-ctx", "2048")
    code, out, err = r.code, r.stdout, r.stderr
    assert code == 2, err
    assert out == ""
    assert "internal error" not in err and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("backend:")]
    assert lines[0].startswith("error: the prompt is ") and "2048-token" in lines[0]
    assert lines[1].startswith("hint:") and "--num-ctx" in lines[1]


@pytest.mark.slow
def test_korean_rag_over_a_long_corpus_never_overflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported failure: k Korean chunks of 800 characters overflowed the window. Four of
    the twelve questions, at the default settings: a full 4,096-token prompt takes the
    135M model about 15 s to read on 2 cores."""
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")
    docs = hyangga_corpus(tmp_path / "docs")[::3]
    r = run_cli(capsys, "rag", "ingest", str(tmp_path / "docs"), "--index", str(tmp_path / "i"))
    assert r.code == 0, r.stderr
    packed = 0
    for name, title, _author in docs:
        r = run_cli(
            capsys, "rag", "ask", f"{title}는 누가 지었나요?", "--index", str(tmp_path / "i"),
            "--max-tokens", "48", "--json",
        )  # fmt: skip
        assert r.code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert "internal error" not in r.stderr
        sent = [r for r in doc["retrieved"] if r["in_prompt"]]
        assert sent and Path(sent[0]["source"]).name == name, "the right document comes first"
        packed += doc["passages_dropped"] + doc["passages_trimmed"]
    assert packed >= len(docs), "every question needed packing"


@pytest.mark.slow
def test_a_multi_token_prompt_runs_through_the_default_settings() -> None:
    """llama.cpp's AMX path crashed (SIGSEGV) on any prompt over one token on CPUs with AMX;
    in a child process, so a crash fails this test instead of the whole run."""
    script = (
        "from pipelines import load_backend, load_settings\n"
        "b = load_backend(load_settings({'backend': 'embedded', 'max_tokens': 8}))\n"
        "print(b.chat.invoke('Hello there, how are you today? Tell me about Silla.').text)\n"
        "print(b.completion.invoke('The capital of France is'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip()
