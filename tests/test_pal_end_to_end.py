"""PAL end to end: the CLI (fake model and the embedded one), the embedded model, Ollama."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.data import PAL_PROBLEMS
from pipelines.backends import Backend, load_backend
from pipelines.pal import PAL
from pipelines.sandbox import Sandbox
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import OllamaTarget, needs_walls
from tests.fakes import ScriptedChat

pytestmark = needs_walls

PROGRAM = "```python\ndef solution():\n    boxes = 7\n    eggs = 12\n    return boxes * eggs\n```"


@pytest.fixture
def fake_backend(use_model: Callable[..., Any]) -> Iterator[ScriptedChat]:
    yield use_model(ScriptedChat(lambda prompt: PROGRAM))


def test_cli_pal_ask_prints_program_and_answer(
    capsys: pytest.CaptureFixture[str], fake_backend: ScriptedChat
) -> None:
    r = run_cli(capsys, "pal", "ask", "How many eggs in 7 boxes of 12?")
    assert r.code == 0
    assert "boxes * eggs" in r.stdout and "answer: 84" in r.stdout


def test_cli_pal_ask_show_program_shows_it_once(
    capsys: pytest.CaptureFixture[str], fake_backend: ScriptedChat
) -> None:
    r = run_cli(capsys, "pal", "ask", "How many eggs in 7 boxes of 12?", "--show-program")
    assert r.code == 0 and "answer: 84" in r.stdout
    assert (r.stdout + r.stderr).count("boxes * eggs") == 1


def test_cli_pal_ask_json(capsys: pytest.CaptureFixture[str], fake_backend: ScriptedChat) -> None:
    r = run_cli(capsys, "pal", "ask", "How many eggs?", "--samples", "2", "--json")
    doc = r.json()
    assert r.code == 0
    assert set(doc) == {"answer", "program", "ok", "votes", "attempts", "backend", "model", "error"}
    assert doc["answer"] == 84 and doc["votes"] == {"84": 2}


def test_cli_pal_ask_failure_exits_1(
    capsys: pytest.CaptureFixture[str], use_model: Callable[..., Any]
) -> None:
    use_model(ScriptedChat(lambda prompt: "I cannot write programs."))
    r = run_cli(capsys, "pal", "ask", "q?", "--retries", "1", "--show-program")
    assert r.code == 1 and "no answer" in r.stderr and "Traceback" not in r.stderr


def test_cli_pal_ask_bad_task_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], fake_backend: ScriptedChat
) -> None:
    r = run_cli(capsys, "pal", "ask", "q?", "--task", "poetry")
    assert r.code == 2 and "no PAL task" in r.stderr


def test_cli_pal_run_reports_accuracy(
    capsys: pytest.CaptureFixture[str], fake_backend: ScriptedChat, tmp_path: Path
) -> None:
    data = tmp_path / "d.jsonl"
    rows = [
        {"id": "a", "question": "eggs?", "answer": 84},
        {"id": "b", "question": "eggs again?", "answer": "84.0"},
        {"id": "c", "question": "something else?", "answer": 5},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli(capsys, "pal", "run", str(data), "--json")
    doc = r.json()
    assert r.code == 0
    assert (doc["correct"], doc["total"], doc["accuracy"]) == (2, 3, 0.6667)
    assert [i["correct"] for i in doc["items"]] == [True, True, False]


def test_cli_pal_run_bad_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = run_cli(capsys, "pal", "run", str(bad))
    assert r.code == 2 and "bad.jsonl:1" in r.stderr


# -- the embedded model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> Backend:
    return load_backend(load_settings({"backend": "embedded", "max_tokens": 160}))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.mark.slow
def test_embedded_model_end_to_end_is_repeatable(embedded: Backend, sandbox: Sandbox) -> None:
    pal = PAL(model=embedded.chat, sandbox=sandbox, retries=1)
    first = pal.invoke("Tom has 3 apples and buys 4 more. How many apples does he have?")
    again = pal.invoke("Tom has 3 apples and buys 4 more. How many apples does he have?")
    assert first.backend == "embedded" and first.model.startswith("SmolLM2")
    assert first.attempts and all(a.generation_ms > 0 for a in first.attempts)
    assert [a.reply for a in first.attempts] == [a.reply for a in again.attempts], "seeded"
    assert (first.answer, first.ok) == (again.answer, again.ok)
    for attempt in first.attempts:  # whatever the tiny model wrote, it was handled
        assert attempt.ok or attempt.error is not None


@pytest.mark.slow
def test_embedded_completion_form_and_samples(embedded: Backend, sandbox: Sandbox) -> None:
    pal = PAL(model=embedded.completion, sandbox=sandbox, samples=2, retries=0)
    result = pal.invoke("A box holds 12 eggs. How many eggs are in 7 boxes?")
    assert len(result.attempts) == 2
    assert sum(result.votes.values()) == sum(a.ok for a in result.attempts)


@pytest.mark.slow
def test_cli_pal_ask_on_the_embedded_model(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(
        capsys, "pal", "ask", "What is 6 times 7?", "--backend", "embedded", "--max-tokens",
        "120", "--json",
    )  # fmt: skip
    doc = r.json()
    assert doc["backend"] == "embedded" and doc["attempts"]
    assert r.code == (0 if doc["ok"] else 1)


@pytest.mark.slow
def test_cli_pal_run_bundled_dataset_slice(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(
        capsys, "pal", "run", str(PAL_PROBLEMS), "--limit", "2", "--method", "cot", "--backend",
        "embedded", "--max-tokens", "60", "--json",
    )  # fmt: skip
    doc: dict[str, Any] = r.json()
    assert r.code == 0 and doc["total"] == 2 and doc["method"] == "cot"


# -- Ollama over HTTP -----------------------------------------------------------------------------


@pytest.mark.ollama
@pytest.mark.slow
def test_pal_through_ollama(ollama_target: OllamaTarget, sandbox: Sandbox) -> None:
    backend = load_backend(
        load_settings(
            {
                "backend": "ollama",
                "ollama_host": ollama_target.url,
                "ollama_model": ollama_target.model,
                "max_tokens": 120,
            }
        )
    )
    result = PAL(model=backend.chat, sandbox=sandbox, retries=0).invoke("What is 6 times 7?")
    assert result.backend == "ollama" and result.model == ollama_target.model
    assert len(result.attempts) == 1 and result.attempts[0].reply
