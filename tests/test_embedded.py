"""The embedded backend really generating with SmolLM2-135M (seeded, so repeatable)."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from pipelines.backends import Backend, load_backend
from pipelines.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend() -> Backend:
    return load_backend(load_settings({"backend": "embedded", "max_tokens": 48}))


def test_greedy_generation_repeats_exactly(backend: Backend) -> None:
    first = backend.chat.invoke("Name three colours.")
    second = backend.chat.invoke("Name three colours.")
    assert first.content and first.content == second.content
    assert first.usage_metadata and first.usage_metadata["output_tokens"] <= 48
    assert first.response_metadata["model_name"] == "SmolLM2-135M-Instruct.Q4_1"


def test_seed_makes_sampling_repeatable(backend: Backend) -> None:
    hot = backend.chat.bind(temperature=1.2, max_tokens=24)
    same = [hot.invoke("Write a word.", seed=11).content for _ in range(2)]
    others = {hot.invoke("Write a word.", seed=s).content for s in range(12, 17)}
    assert same[0] == same[1]
    assert len(others | {same[0]}) > 1, "different seeds should not all agree"


def test_stream_yields_the_same_text_as_invoke(backend: Backend) -> None:
    chunks = [c.content for c in backend.chat.stream("Say hello.")]
    assert len(chunks) > 1
    assert "".join(chunks) == backend.chat.invoke("Say hello.").content


def test_max_tokens_and_stop_pass_through(backend: Backend) -> None:
    short = backend.chat.invoke("Count from 1 to 50.", max_tokens=5)
    assert short.usage_metadata and short.usage_metadata["output_tokens"] <= 5
    assert short.response_metadata["finish_reason"] == "length"
    full = backend.chat.invoke("Count from 1 to 20.").content
    assert isinstance(full, str) and len(full) > 12
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = backend.chat.invoke("Count from 1 to 20.", stop=[stop]).content
    assert cut == full[: full.index(stop)]


def test_batch_from_threads_is_safe_and_matches_sequential(backend: Backend) -> None:
    prompts = ["What is 1+1?", "What colour is the sky?", "Name a fruit."]
    sequential = [backend.chat.invoke(p).content for p in prompts]
    parallel = [m.content for m in backend.chat.batch(prompts, config={"max_concurrency": 3})]
    assert parallel == sequential


def test_korean_in_and_out(backend: Backend) -> None:
    reply = backend.chat.invoke(
        [SystemMessage("한국어로 답하세요."), HumanMessage("안녕하세요! 오늘 날씨 어때요?")]
    )
    assert isinstance(reply.content, str) and reply.content.strip()
    reply.content.encode("utf-8")  # no lone surrogates from split multi-byte tokens
    streamed = "".join(c.content for c in backend.chat.stream("안녕하세요!"))
    assert "\ufffd" not in streamed


def test_completion_form_continues_raw_text(backend: Backend) -> None:
    text = backend.completion.invoke("1, 2, 3, 4,", max_tokens=8)
    assert text.strip()
    assert backend.completion.invoke("1, 2, 3, 4,", max_tokens=8) == text


def test_a_decode_failure_is_a_clear_error_not_an_internal_one() -> None:
    """llama.cpp's "llama_decode returned 1" (no room left) becomes one line with a hint."""
    from pipelines.backends.llama_runtime import decode_errors
    from pipelines.errors import ContextOverflowError

    with (
        pytest.raises(ContextOverflowError, match="ran out of context room") as info,
        decode_errors(),
    ):
        raise RuntimeError("llama_decode returned 1")
    assert "--num-ctx" in (info.value.hint or "")
    with pytest.raises(RuntimeError, match="something else"), decode_errors():
        raise RuntimeError("something else")


def test_the_answer_always_keeps_a_spare_cell(backend: Backend) -> None:
    from pipelines.backends.llama_runtime import load_runtime

    chat = backend.chat
    runtime = load_runtime(chat.model_path, chat.n_ctx, chat.threads)  # type: ignore[attr-defined]
    n = runtime.n_ctx
    assert runtime.room_for(n - 10, 48) == 9
    assert runtime.room_for(n - 1, 48) == 1 and runtime.room_for(10, 0) == n - 11
    assert runtime.room_for(10, 48) == 48
