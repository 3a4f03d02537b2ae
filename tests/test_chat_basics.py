"""Conversation basics as a newcomer meets them: an answer printed once, no empty sessions,
`exit`/`quit` and multi-line input in the REPL, Ctrl-C on a one-shot chat, one JSON shape
for a turn, and ISO 8601 times. REPL tests run in a real pty (tests/test_chat.py's Terminal).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.chat import Message, SessionStore
from pipelines.settings import load_settings
from tests.chat_repl import RAG_ANSWER
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat
from tests.test_chat import DRIVER, ROOT, Terminal, counting

CORPUS = ROOT / "evals" / "datasets" / "rag" / "corpus"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def driven(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`llamapipe ARGS` on the scripted model, without a terminal."""
    return subprocess.run(
        [sys.executable, str(DRIVER), "--", *args], input=stdin, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def saved_sessions() -> list[dict[str, Any]]:
    done = driven("sessions", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["sessions"])


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.rag import Index

    where = tmp_path_factory.mktemp("rag") / "index"
    Index(where).ingest([CORPUS])
    return where


# -- sessions: none left empty, `-c` continues one with turns ----------------------------------


def test_continue_skips_sessions_without_turns(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    talked = store.create()
    store.append(talked, Message("user", "안녕"), Message("assistant", "안녕하세요."))
    store.create("empty-and-newer")
    assert store.last() == talked


def test_a_repl_left_without_a_turn_keeps_no_session() -> None:
    term = Terminal("chat")
    term.at_prompt("\x04")  # Ctrl-D at once
    term.read_until("no session was kept")
    assert term.wait() == 0
    term = Terminal("chat", "--session", "named")
    term.at_prompt("exit\r")  # leaves, and is not sent to the model
    term.read_until("no session was kept")
    assert term.wait() == 0
    assert saved_sessions() == []


def test_chat_from_an_empty_standard_input_keeps_no_session() -> None:
    done = driven("chat", stdin="")
    assert done.returncode == 2 and "standard input is empty" in done.stderr
    assert saved_sessions() == []


def test_continue_after_an_empty_repl_continues_the_session_with_turns() -> None:
    assert driven("chat", "--session", "trip", stdin="첫 번째\n").returncode == 0
    term = Terminal("chat")
    term.at_prompt("/exit\r")
    term.read_until("no session was kept")
    assert term.wait() == 0
    again = driven("chat", "-c", "두 번째")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "I see 2 user messages.\n"
    assert [(s["name"], s["messages"]) for s in saved_sessions()] == [("trip", 4)]


def test_a_session_named_with_save_is_kept_without_turns() -> None:
    term = Terminal("chat")
    term.at_prompt("/save later\r")
    term.read_until("saved as later")
    term.at_prompt("\x04")
    term.read_until("saved as session later")
    assert term.wait() == 0
    assert [s["name"] for s in saved_sessions()] == ["later"]


# -- the REPL: exit, quit, multi-line ----------------------------------------------------------


def test_quit_leaves_and_triple_quotes_make_one_message_of_several_lines() -> None:
    term = Terminal("chat", "--session", "lines")
    term.at_prompt('"""\r')
    term.read_until("…")
    term.type("첫 줄\r")
    term.read_until("…", times=2)
    term.type("둘째 줄\r")
    term.read_until("…", times=3)
    term.type('"""\r')
    term.read_until("I see 1 user messages.")
    term.at_prompt("Exit\r")
    term.read_until("saved as session lines")
    assert term.wait() == 0
    shown = json.loads(driven("sessions", "show", "lines", "--json").stdout)
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "첫 줄\n둘째 줄"), ("assistant", "I see 1 user messages."),
    ]  # fmt: skip
    term = Terminal("chat", "--session", "lines")
    term.at_prompt("quit\r")
    term.read_until("saved as session lines")
    assert term.wait() == 0
    assert len(json.loads(driven("sessions", "show", "lines", "--json").stdout)["messages"]) == 2


# -- Ctrl-C on a one-shot chat -----------------------------------------------------------------


def test_ctrl_c_on_a_one_shot_chat_ends_the_partial_line_before_the_notice() -> None:
    term = Terminal("chat", "a long answer please", delay=0.3)
    term.read_until("word word")
    term.type("\x03")
    term.read_until("interrupted")
    assert term.wait() == 130
    before, after = ANSI.sub("", term.seen).split("interrupted", 1)
    assert "word" not in after, "all the partial text came before the notice"
    assert before.rstrip(" ").endswith("\n"), f"the notice starts its own line: {before!r}"
    assert "word word" in before


# -- a RAG answer is printed once ---------------------------------------------------------------


def test_rag_ask_on_a_terminal_streams_the_answer_then_only_its_check(
    corpus_index: Path,
) -> None:
    term = Terminal("rag", "ask", "처용가는 누가 지었나요?", "--index", str(corpus_index))
    assert term.wait(timeout=60) == 0
    seen = ANSI.sub("", term.seen)
    assert seen.count(RAG_ANSWER) == 1, seen
    assert "checked answer: 1 citation" in seen and "cheoyongga.txt" in seen


def test_rag_ask_piped_prints_the_checked_answer_once(
    corpus_index: Path, use_model: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(ScriptedChat(lambda prompt: RAG_ANSWER))
    result = run_cli(capsys, "rag", "ask", "처용가는 누가 지었나요?", "--index", str(corpus_index))
    assert result.code == 0, result.stderr
    assert result.stdout.count(RAG_ANSWER) == 1, result.stdout
    assert result.stdout.startswith(RAG_ANSWER + "\n")
    assert "checked answer: 1 citation" in result.stdout and "cheoyongga.txt" in result.stdout


def test_rag_chat_piped_prints_each_checked_answer_once(
    corpus_index: Path,
    use_model: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    use_model(
        ScriptedChat(
            lambda prompt: "처용가는 누가 지었어?" if "Latest question:" in prompt else RAG_ANSWER
        )
    )
    turns = io.TextIOWrapper(io.BytesIO("처용가는 어떤 노래야?\n그건 누가 지었어?\n".encode()))
    monkeypatch.setattr(sys, "stdin", turns)
    result = run_cli(capsys, "rag", "chat", "--index", str(corpus_index), "--lines")
    assert result.code == 0, result.stderr
    assert result.stdout.count(RAG_ANSWER) == 2, result.stdout


# -- JSON shapes -------------------------------------------------------------------------------


def test_a_one_shot_turn_has_the_shape_of_a_sessions_turn(
    use_model: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(ScriptedChat(counting))
    one = run_cli(capsys, "chat", "안녕", "--json").json()
    session = run_cli(capsys, "chat", "--session", "s", "안녕", "--json").json()
    assert set(session) == {"session", "turns"} and session["session"] == "s"
    (turn,) = session["turns"]
    assert set(one) == set(turn)
    assert one["session"] is None and turn["session"] == "s"
    for doc in (one, turn):
        assert doc["message"] == "안녕"
        assert doc["text"] == doc["answer"] == "I see 1 user messages."
        assert doc["backend"] == "scripted" and doc["stopped"] is False


def test_a_rag_chat_turn_shares_the_turn_keys(
    corpus_index: Path, use_model: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(ScriptedChat(lambda prompt: RAG_ANSWER))
    plain = run_cli(capsys, "chat", "안녕", "--json").json()
    rag = run_cli(capsys, "chat", "--rag", str(corpus_index), "--session", "r",
                  "처용가는 누가 지었나요?", "--json").json()  # fmt: skip
    (turn,) = rag["turns"]
    shared = set(plain) - {"history_used", "history_left_out"}
    assert shared <= set(turn)
    assert turn["text"] == RAG_ANSWER and turn["answer"]["citations"]
    assert turn["backend"] == "scripted"


def test_sessions_json_gives_iso_8601_times(
    use_model: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(ScriptedChat(counting))
    assert run_cli(capsys, "chat", "--session", "t", "hi").code == 0
    (listed,) = run_cli(capsys, "sessions", "--json").json()["sessions"]
    (stored,) = SessionStore.in_data_dir(load_settings().data_dir).sessions()
    for key in ("created", "updated"):
        when = datetime.fromisoformat(listed[key])
        assert when.tzinfo is not None, "with its UTC offset"
        assert when.timestamp() == int(getattr(stored, key))  # the stored time, to the second
