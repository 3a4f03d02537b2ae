"""PAL with scripted fake models and the real sandbox: extraction, retries, voting, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from evals.data import PAL_PROBLEMS
from pipelines.budget import budget_for
from pipelines.errors import ContextOverflowError, UsageError
from pipelines.pal import (
    PAL,
    Baseline,
    NoProgramError,
    PALEvent,
    PALInput,
    PALResult,
    answer_key,
    extract_program,
    load_dataset,
    parse_answer,
    same_answer,
)
from pipelines.sandbox import Sandbox
from tests.conftest import NO_WALLS
from tests.fakes import ScriptedChat, ScriptedLLM


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    if NO_WALLS:
        pytest.skip(NO_WALLS)
    with Sandbox() as sb:
        yield sb


def fenced(body: str, chatter: str = "Here is the program:") -> str:
    return f"{chatter}\n```python\n{body}\n```\nThis returns the answer."


RIGHT = fenced(
    "def solution():\n    eggs_per_box = 12\n    boxes = 7\n    return eggs_per_box * boxes"
)
QUESTION = "A box holds 12 eggs. How many eggs are in 7 boxes?"


# -- extraction ------------------------------------------------------------------------------


def test_extract_from_fences_with_chatter() -> None:
    program = extract_program(RIGHT)
    assert program.startswith("def solution():") and "This returns" not in program


def test_extract_without_fences_cuts_trailing_chatter() -> None:
    reply = "Sure.\ndef solution():\n    x = 2\n    return x\nThis program returns 2."
    assert extract_program(reply) == "def solution():\n    x = 2\n    return x\n"


def test_extract_keeps_imports_before_solution() -> None:
    reply = "from datetime import date\n\ndef solution():\n    return str(date(2020, 1, 1))"
    assert extract_program(reply).startswith("from datetime import date")


def test_extract_picks_the_block_that_defines_solution() -> None:
    reply = "```python\nprint('hi')\n```\nand\n```python\ndef solution():\n    return 1\n```"
    assert extract_program(reply) == "def solution():\n    return 1\n"


def test_extract_korean_text_and_identifiers() -> None:
    reply = (
        "풀이입니다:\n```python\ndef solution():\n    사과 = 3  # 사과 개수\n    return 사과\n```\n"
        "답은 3개입니다."
    )
    assert "사과 = 3" in extract_program(reply)


def test_extract_an_unclosed_fence() -> None:
    assert extract_program("```python\ndef solution():\n    return 5\n").endswith("return 5\n")


def test_extract_missing_solution_says_so() -> None:
    with pytest.raises(NoProgramError, match="does not define solution"):
        extract_program("```python\nx = 1 + 1\nprint(x)\n```")


def test_extract_no_program_at_all() -> None:
    with pytest.raises(NoProgramError, match="no Python program"):
        extract_program("The answer is 84.")


def test_extract_completion_continuation_gets_its_prefix() -> None:
    assert extract_program("return 6 * 7\n", prefix="def solution():\n    ") == (
        "def solution():\n    return 6 * 7\n"
    )


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [8, 8.0, "8", " 8 ", "$8", "8.00", "8개", "8 dollars"])
def test_numbers_compare_as_numbers(value: Any) -> None:
    assert same_answer(value, 8)


def test_different_answers_differ() -> None:
    assert not same_answer(8, 9)
    assert not same_answer("blue", "green")
    assert same_answer("Blue", "blue.")
    assert same_answer("1,000", 1000)
    assert same_answer(0.1 + 0.2, 0.3)
    assert answer_key(True) != answer_key(1)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("3 * 7 = 21, plus 5 is 26.\nThe answer is 26.", "26"),
        ("The answer is 03/01/2024.", "03/01/2024"),
        ("The answer is blue.", "blue"),
        ("모두 더하면 42개입니다. 정답은 42개입니다.", "42"),
        ("I think it is 12, no, 14", "14"),
    ],
)
def test_parse_answer_from_text(text: str, answer: str) -> None:
    assert parse_answer(text) == answer


# -- the pipeline ------------------------------------------------------------------------------


def test_invoke_returns_answer_program_execution_and_votes(sandbox: Sandbox) -> None:
    model = ScriptedChat([RIGHT])
    result = PAL(model=model, sandbox=sandbox).invoke(QUESTION)
    assert isinstance(result, PALResult)
    assert result.ok and result.answer == 84
    assert "eggs_per_box" in (result.program or "")
    assert result.execution.ok and result.execution.result == 84
    assert result.votes == {"84": 1}
    assert len(result.attempts) == 1 and result.attempts[0].error is None
    assert (result.backend, result.model) == ("ScriptedChat", "scripted-chat")
    assert QUESTION in model.calls[0]["prompt"], "the question reached the model"


@pytest.mark.parametrize("given", [QUESTION, {"question": QUESTION}, PALInput(question=QUESTION)])
def test_input_forms(sandbox: Sandbox, given: Any) -> None:
    assert PAL(model=ScriptedChat([RIGHT]), sandbox=sandbox).invoke(given).answer == 84


def test_bad_input_is_a_usage_error(sandbox: Sandbox) -> None:
    pal = PAL(model=ScriptedChat([RIGHT]), sandbox=sandbox)
    with pytest.raises(UsageError):
        pal.invoke(42)
    with pytest.raises(UsageError, match="empty"):
        pal.invoke("   ")


def test_unknown_task_names_the_choices(sandbox: Sandbox) -> None:
    with pytest.raises(UsageError, match="no PAL task") as info:
        PAL(model=ScriptedChat([RIGHT]), sandbox=sandbox, task="poetry").invoke("x")
    assert "math_ko" in (info.value.hint or "")


def test_a_failing_program_is_retried_with_its_error(sandbox: Sandbox) -> None:
    broken = fenced("def solution():\n    eggs = 12\n    return egs * 7")
    model = ScriptedChat([broken, RIGHT])
    result = PAL(model=model, sandbox=sandbox, retries=1).invoke(QUESTION)
    assert result.ok and result.answer == 84
    assert [a.ok for a in result.attempts] == [False, True]
    assert result.attempts[0].error is not None and result.attempts[0].error.type == "NameError"
    retry_prompt = model.calls[1]["prompt"]
    assert "NameError" in retry_prompt and "egs" in retry_prompt, "the error went back"
    assert "return egs * 7" in retry_prompt, "with the program that failed"


def test_retries_run_out(sandbox: Sandbox) -> None:
    broken = fenced("def solution():\n    return 1 / 0")
    result = PAL(model=ScriptedChat([broken, broken]), sandbox=sandbox, retries=1).invoke("q?")
    assert not result.ok and result.answer is None
    assert "ZeroDivisionError" in (result.error or "")
    assert len(result.attempts) == 2


def test_retries_leave_out_the_oldest_failures_when_the_window_is_full(sandbox: Sandbox) -> None:
    # Each failed program is long; the window holds the question and one of them, not two.
    def long_failure(n: int) -> str:
        lines = "".join(f"    x{i} = {i}\n" for i in range(100))
        return fenced(f"def solution():\n{lines}    return {n} / 0")

    first, second = long_failure(1), long_failure(2)
    model = ScriptedChat([first, second, RIGHT], num_ctx=2048, max_tokens=256)
    result = PAL(model=model, sandbox=sandbox, retries=2).invoke(QUESTION)
    assert result.ok and len(result.attempts) == 3
    budget = budget_for(model)
    sent = [call["messages"] for call in model.calls]
    replies = [sum(m.type == "ai" for m in messages) for messages in sent]  # + worked examples
    assert [n - replies[0] for n in replies] == [0, 1, 1], "the second failure left the first out"
    assert sent[2][-2].text == second, "the latest failure is the one kept"
    assert all(budget.fits(messages) for messages in sent)
    assert any(QUESTION in m.text for m in sent[2]), "the question always stays"


def test_a_question_too_long_for_the_window_names_num_ctx(sandbox: Sandbox) -> None:
    model = ScriptedChat([RIGHT], num_ctx=512, max_tokens=128)
    with pytest.raises(ContextOverflowError, match="the PAL prompt"):
        PAL(model=model, sandbox=sandbox).invoke(QUESTION * 40)
    assert model.calls == []


def test_no_retries_means_one_attempt(sandbox: Sandbox) -> None:
    result = PAL(
        model=ScriptedChat([fenced("def solution():\n    return 1 / 0")]),
        sandbox=sandbox,
        retries=0,
    ).invoke("q?")
    assert not result.ok and len(result.attempts) == 1


def test_missing_solution_gets_feedback(sandbox: Sandbox) -> None:
    model = ScriptedChat(["The answer is 84.", RIGHT])
    result = PAL(model=model, sandbox=sandbox).invoke(QUESTION)
    assert result.ok and result.attempts[0].error.type == "NoProgram"  # type: ignore[union-attr]
    assert "solution()" in model.calls[1]["prompt"]


def test_returning_none_is_not_an_answer(sandbox: Sandbox) -> None:
    model = ScriptedChat([fenced("def solution():\n    print(84)"), RIGHT])
    result = PAL(model=model, sandbox=sandbox).invoke(QUESTION)
    assert result.attempts[0].error.type == "NoAnswer"  # type: ignore[union-attr]
    assert result.answer == 84


def test_self_consistency_votes_numbers_as_numbers(sandbox: Sandbox) -> None:
    replies = iter(
        [
            fenced("def solution():\n    return 8"),
            fenced("def solution():\n    return 8.0"),
            fenced("def solution():\n    return 7"),
        ]
    )
    model = ScriptedChat(lambda prompt: next(replies))
    result = PAL(model=model, sandbox=sandbox, samples=3, seed=10).invoke("q?")
    assert same_answer(result.answer, 8)
    assert result.votes == {"8": 2, "7": 1}
    temperatures = {c["temperature"] for c in model.calls}
    seeds = sorted(c["seed"] for c in model.calls)
    assert temperatures == {0.7}, "samples > 1 sample with temperature > 0"
    assert seeds == [10, 11, 12], "each sample its own seed, reproducibly"


def test_a_tie_goes_to_the_earliest_sample(sandbox: Sandbox) -> None:
    def reply(prompt: str) -> str:
        return fenced("def solution():\n    return 1")

    result = PAL(model=ScriptedChat(reply), sandbox=sandbox, samples=2).invoke("q?")
    assert result.votes == {"1": 2} and result.answer == 1


def test_stream_yields_progress_then_the_result(sandbox: Sandbox) -> None:
    broken = fenced("def solution():\n    return x")
    items = list(PAL(model=ScriptedChat([broken, RIGHT]), sandbox=sandbox).stream(QUESTION))
    kinds = [i.kind if isinstance(i, PALEvent) else "result" for i in items]
    assert kinds == ["generated", "ran", "generated", "ran", "voted", "result"]
    assert items[-1].answer == 84


def test_batch_and_pipe(sandbox: Sandbox) -> None:
    model = ScriptedChat(lambda prompt: RIGHT)
    pal = PAL(model=model, sandbox=sandbox)
    results = pal.batch([QUESTION, {"question": QUESTION}])
    assert [r.answer for r in results] == [84, 84]
    chain = (
        RunnableLambda(lambda q: {"question": q.upper()}) | pal | RunnableLambda(lambda r: r.answer)
    )
    assert chain.invoke(QUESTION.lower()) == 84


def test_completion_form_for_completion_models(sandbox: Sandbox) -> None:
    model = ScriptedLLM(["eggs = 12 * 7\n    return eggs\n"])
    result = PAL(model=model, sandbox=sandbox).invoke(QUESTION)
    assert result.ok and result.answer == 84
    call = model.calls[0]
    assert call["prompt"].endswith("def solution():\n    ")
    assert "\n# Q:" in call["stop"]


def test_korean_task_prompt(sandbox: Sandbox) -> None:
    model = ScriptedChat([fenced("def solution():\n    사과 = 15 * 6\n    return 사과")])
    result = PAL(model=model, sandbox=sandbox, task="math_ko").invoke("사과가 몇 개입니까?")
    assert result.answer == 90
    assert "파이썬" in model.calls[0]["prompt"]


def test_json_document_fields(sandbox: Sandbox) -> None:
    doc = PAL(model=ScriptedChat([RIGHT]), sandbox=sandbox).invoke(QUESTION).to_json()
    assert set(doc) == {"answer", "program", "ok", "votes", "attempts", "backend", "model", "error"}
    json.dumps(doc)


# -- baselines and datasets -------------------------------------------------------------------


def test_cot_and_direct_baselines_parse_the_answer() -> None:
    cot = Baseline(model=ScriptedChat(["12 * 7 = 84.\nThe answer is 84."]), method="cot")
    assert cot.invoke(QUESTION).answer == "84"
    direct = Baseline(model=ScriptedChat(["84"]), method="direct").invoke(QUESTION)
    assert direct.method == "direct" and same_answer(direct.answer, 84)


def test_bundled_dataset_has_forty_problems_a_quarter_korean() -> None:
    items = load_dataset(PAL_PROBLEMS)
    assert len(items) >= 40
    assert sum(i.lang == "ko" for i in items) * 4 >= len(items)
    assert len({i.id for i in items}) == len(items)


def test_gsm8k_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    rows = [{"question": "2 + 2?", "answer": "Two plus two.\n#### 4"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (item,) = load_dataset(path)
    assert (item.id, item.answer) == ("1", "4")


def test_bad_dataset_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": 1}\n{"question": "b"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2"):
        load_dataset(path)
    with pytest.raises(UsageError, match="no such dataset"):
        load_dataset(tmp_path / "missing.jsonl")
