"""Chat that remembers: the session store, the conversation Runnable, piped and one-turn
chat from the CLI, `llamapipe sessions`, and the REPL driven through a real pty."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from pipelines.budget import budget_for
from pipelines.chat import Conversation, Message, SessionHistory, SessionStore
from pipelines.errors import UsageError
from tests.cli_helpers import run_cli
from tests.conftest import needs_walls
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("chat_repl.py")


def counting(prompt: str) -> str:
    system = " with a system prompt" if "[system]" in prompt else ""
    return f"I see {prompt.count('[human]')} user messages{system}."


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "sessions.sqlite")


# -- the store and the conversation ------------------------------------------------------------


def test_the_store_keeps_sessions_in_order(store: SessionStore) -> None:
    first = store.create()
    named = store.create("여행", system="Answer briefly.")
    store.append(named, Message("user", "경주에 가 볼 만한 곳은?"), Message("assistant", "불국사."))
    assert [s.name for s in store.sessions()] == ["여행", first]
    assert store.last() == "여행" and store.system("여행") == "Answer briefly."
    assert [m.to_json() for m in store.messages("여행")] == [
        {"role": "user", "content": "경주에 가 볼 만한 곳은?"},
        {"role": "assistant", "content": "불국사."},
    ]
    with pytest.raises(UsageError, match="exists already"):
        store.create("여행")
    store.rename("여행", "trip")
    assert store.delete("trip") == 2
    with pytest.raises(UsageError, match="no session named 'trip'"):
        store.messages("trip")


def test_history_reaches_the_model_and_is_saved(store: SessionStore) -> None:
    model = ScriptedChat(counting)
    chat = Conversation(model=model, store=store)
    session = store.create()
    assert chat.invoke({"session": session, "message": "제 이름은 민지예요."}).answer == (
        "I see 1 user messages."
    )
    reply = chat.invoke({"session": session, "message": "제 이름이 뭐죠?", "system": "Be kind."})
    assert reply.answer == "I see 2 user messages with a system prompt."
    assert reply.history_used == 2 and reply.history_left_out == 0
    assert "제 이름은 민지예요." in model.calls[-1]["prompt"]
    assert len(store.messages(session)) == 4


def test_trimming_drops_the_oldest_turns_and_keeps_the_system_prompt(store: SessionStore) -> None:
    model = ScriptedChat(counting, num_ctx=600, max_tokens=100)
    chat = Conversation(model=model, store=store)
    session = store.create(system="You are a terse assistant.")
    for k in range(12):
        reply = chat.invoke({"session": session, "message": f"Turn {k}: " + "word " * 30})
    assert reply.history_left_out > 0  # the window could not hold twelve turns
    prompt = model.calls[-1]["prompt"]
    assert prompt.startswith("[system] You are a terse assistant.")
    assert "Turn 11:" in prompt and "Turn 0:" not in prompt
    assert prompt.split("\n")[1].startswith("[human]")  # whole turns: never opens on an answer
    assert budget_for(model).fits(prompt)
    assert len(store.messages(session)) == 24  # every turn stays saved


def test_an_interrupted_answer_is_saved_as_far_as_it_got(store: SessionStore) -> None:
    chat = Conversation(model=ScriptedChat(lambda p: "one two three four five"), store=store)
    session = store.create()
    stream = chat.stream({"session": session, "message": "count"})
    assert next(stream) == "one "
    stream.close()  # what a Ctrl-C does to the generator
    (user, answer) = store.messages(session)
    assert (user.content, answer.content, answer.meta.get("stopped")) == ("count", "one", True)


def test_a_failed_call_saves_nothing(store: SessionStore) -> None:
    from pipelines.errors import ServerUnreachableError

    def down(prompt: str) -> str:
        raise ServerUnreachableError("cannot reach the server", hint="start it")

    chat = Conversation(model=ScriptedChat(down), store=store)
    session = store.create()
    with pytest.raises(ServerUnreachableError):
        list(chat.stream({"session": session, "message": "hello?"}))
    assert store.messages(session) == []  # ask again later: no half turn in the history


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_session_history_works_with_runnable_with_message_history(store: SessionStore) -> None:
    model = ScriptedChat(counting)
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: SessionHistory(store, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": "lc"}}
    chain.invoke({"question": "hi"}, config=config)
    second = chain.invoke({"question": "again"}, config=config)
    assert second.content == "I see 2 user messages."  # LangChain's pattern, deprecated there
    assert [m.role for m in store.messages("lc")] == ["user", "assistant"] * 2


# -- the CLI, without a terminal -----------------------------------------------------------------


@pytest.fixture
def fake_model(use_model: Callable[..., Any]) -> ScriptedChat:
    return use_model(ScriptedChat(counting))


def test_piped_turns_are_answered_and_saved(
    fake_model: ScriptedChat, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("안녕\n\n두 번째\n".encode())))
    result = run_cli(capsys, "chat", "--lines", "--session", "piped")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["I see 1 user messages.", "I see 2 user messages."]
    shown = run_cli(capsys, "sessions", "show", "piped", "--json").json()
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "안녕"), ("assistant", "I see 1 user messages."),
        ("user", "두 번째"), ("assistant", "I see 2 user messages."),
    ]  # fmt: skip
    cont = run_cli(capsys, "chat", "-c", "세 번째", "--json")
    assert cont.json()["turns"][0]["answer"] == "I see 3 user messages."
    listed = run_cli(capsys, "sessions", "--json").json()["sessions"]
    assert [(s["name"], s["messages"]) for s in listed] == [("piped", 6)]
    assert run_cli(capsys, "sessions", "rm", "piped").code == 0
    assert run_cli(capsys, "sessions", "--json").json()["sessions"] == []


def test_session_mistakes_are_one_line(
    fake_model: ScriptedChat, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = run_cli(capsys, "sessions", "show", "nope")
    assert missing.code == 2 and "no session named 'nope'" in missing.stderr
    nothing = run_cli(capsys, "chat", "--continue", "hi")
    assert nothing.code == 2 and "no session to continue" in nothing.stderr
    both = run_cli(capsys, "chat", "--continue", "--session", "x", "hi")
    assert both.code == 2
    assert run_cli(capsys, "sessions", "rm", "nope").code == 2


def test_a_one_shot_prompt_is_not_saved(
    fake_model: ScriptedChat, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "chat", "hello").stdout.strip() == "I see 1 user messages."
    assert run_cli(capsys, "sessions", "--json").json()["sessions"] == []


def test_sessions_persist_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def chat(*args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, str(DRIVER), "--", "chat", *args], input=stdin, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert chat("--session", "s", stdin="first\n") == "I see 1 user messages.\n"
    assert chat("--continue", "second") == "I see 2 user messages.\n"


# -- the REPL, in a pty ----------------------------------------------------------------------


class Terminal:
    """The REPL on a pseudo-terminal: type lines and keys, read what it prints."""

    def __init__(
        self, *args: str, delay: float = 0.0, window: int | None = None, landlock: bool = True
    ) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the CLI, with the pty as its controlling terminal
            sized = ["--window", str(window)] if window else []
            sized += [] if landlock else ["--no-landlock"]
            argv = [sys.executable, str(DRIVER), "--delay", str(delay), *sized, "--", *args]
            os.execve(sys.executable, argv, env)
        self.seen = ""
        self._prompts = 0
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode  # split reads

    def read_until(self, text: str, timeout: float = 20.0, times: int = 1) -> str:
        """Wait until `text` has been shown `times` times in all."""
        deadline = time.monotonic() + timeout
        while self.seen.count(text) < times:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"waited for {text!r}; the terminal shows:\n{self.seen}")
            try:
                self.seen += self._decode(os.read(self.fd, 4096))
            except OSError:  # the child closed the terminal
                raise AssertionError(f"ended before {text!r}:\n{self.seen}") from None
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def at_prompt(self, text: str) -> None:
        """Wait for the REPL's prompt, then type: keys sent while the REPL is between
        prompts can be lost (readline switches the terminal's mode), as for a person."""
        self.read_until("›", times=self._prompts + 1)
        self._prompts = self.seen.count("›")
        # A person is never this fast: CPython's readline loop misses a SIGINT that lands
        # in the instant between showing the prompt and waiting for keys.
        time.sleep(0.1)
        self.type(text)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.seen += self._decode(os.read(self.fd, 4096))
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the REPL did not exit:\n{self.seen}")


def test_the_repl_remembers_takes_commands_and_leaves_on_ctrl_d() -> None:
    term = Terminal("chat", "--session", "repl")
    term.at_prompt("안녕하세요, 저는 민지예요\r")
    term.read_until("I see 1 user messages.")
    term.at_prompt("제 이름이 뭐죠?\r")
    term.read_until("I see 2 user messages.")
    term.at_prompt("/system 짧게 답하세요\r")
    term.read_until("system prompt set")
    term.at_prompt("다시?\r")
    term.read_until("I see 3 user messages with a system prompt.")
    term.at_prompt("/reset\r")
    term.read_until("forgotten")
    term.at_prompt("처음부터\r")
    term.read_until("I see 1 user messages with a system prompt.")
    term.at_prompt("/nope\r")
    term.read_until("unknown command /nope")
    term.at_prompt("\x04")  # Ctrl-D at an empty prompt
    term.read_until("saved as session repl")
    assert term.wait() == 0


def test_a_long_repl_session_trims_old_turns_and_keeps_the_system_prompt() -> None:
    term = Terminal("chat", "--session", "long", window=600)
    term.at_prompt("/system Answer in one word.\r")
    term.read_until("system prompt set")
    for k in range(10):
        term.at_prompt(f"Turn {k}: " + "word " * 30 + "\r")
        term.read_until("with a system prompt.", times=k + 1)  # the answer to this turn
    last = term.seen.rsplit("I see ", 1)[1]
    assert int(last.split()[0]) < 10  # the oldest turns were left out of the prompt
    term.at_prompt("/exit\r")
    assert term.wait() == 0


@needs_walls
def test_pal_in_the_repl_answers_with_a_sandboxed_program() -> None:
    term = Terminal("chat", "--session", "pal")
    term.at_prompt("/pal 17 * 23 + 4?\r")
    term.read_until("395")
    term.at_prompt("/program\r")
    term.read_until("return 17 * 23 + 4")
    term.at_prompt("what did we get?\r")
    term.read_until("I see 2 user messages.")  # the /pal turn joined the history
    term.at_prompt("/exit\r")
    assert term.wait() == 0


def test_a_pal_that_cannot_build_its_sandbox_says_why_and_the_repl_goes_on() -> None:
    term = Terminal("chat", "--session", "nopal", landlock=False)
    term.at_prompt("/pal 17 * 23 + 4?\r")
    term.read_until("LLAMAPIPE_SANDBOX_ISOLATION=unsafe")
    assert "Landlock" in term.seen
    term.at_prompt("still there?\r")
    term.read_until("I see 1 user messages.")  # answered; the failed /pal left no turn
    term.at_prompt("/exit\r")
    assert term.wait() == 0


def test_ctrl_c_stops_an_answer_and_the_repl_goes_on() -> None:
    term = Terminal("chat", "--session", "stop", delay=0.3)
    term.at_prompt("a long answer please\r")
    term.read_until("word word")
    term.type("\x03")  # Ctrl-C mid-stream
    term.read_until("stopped; what came is saved")
    term.at_prompt("\x03")  # Ctrl-C at the prompt: a fresh line, not an exit
    term.at_prompt("short one\r")
    term.read_until("I see 2 user messages.")
    term.at_prompt("/exit\r")
    assert term.wait() == 0
    shown = subprocess.run(
        [sys.executable, str(DRIVER), "--", "sessions", "show", "stop", "--json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    messages = json.loads(shown.stdout)["messages"]
    assert messages[1]["meta"]["stopped"] is True
    assert messages[1]["content"].startswith("word word") and "end." not in messages[1]["content"]


# -- RAG chat --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.rag import Index

    where = tmp_path_factory.mktemp("rag") / "index"
    Index(where).ingest([ROOT / "evals" / "datasets" / "rag" / "corpus"])
    return where


def test_a_follow_up_is_made_standalone_then_answered_with_checked_citations(
    store: SessionStore, corpus_index: Path
) -> None:
    from pipelines.chat import RAGConversation
    from pipelines.rag import RAG, Index

    def reply(prompt: str) -> str:
        if "Latest question:" in prompt:  # the rewrite step
            assert "처용가는 어떤 노래야?" in prompt  # the history reached it
            return "처용가는 누가 지었어?"
        return "처용가는 신라 헌강왕 때 처용이 지었다고 전하는 8구체 향가이다 [1]."

    model = ScriptedChat(reply)
    chat = RAGConversation(rag=RAG(model=model, index=Index(corpus_index), k=3), store=store)
    session = store.create()
    first = chat.invoke({"session": session, "message": "처용가는 어떤 노래야?"})
    assert not first.rewritten and len(model.calls) == 1  # nothing to rewrite on turn one
    second = chat.invoke({"session": session, "message": "그럼 그건 누가 지었어?"})
    assert second.rewritten and second.question == "처용가는 누가 지었어?"
    assert "Latest question: 그럼 그건 누가 지었어?" in model.calls[1]["prompt"]
    assert "처용가는 누가 지었어?" in model.calls[2]["prompt"]  # retrieval and answer used it
    (citation,) = second.answer.citations
    assert citation.source.endswith("cheoyongga.txt") and "헌강왕" in citation.quote
    saved = store.messages(session)[-1]
    assert saved.meta["question"] == "처용가는 누가 지었어?" and saved.meta["citations"]
    assert store.messages(session)[-2].content == "그럼 그건 누가 지었어?"  # as typed


def test_rag_chat_abstains_per_turn_and_a_rambling_rewrite_is_not_used(
    store: SessionStore, corpus_index: Path
) -> None:
    from pipelines.chat import RAGConversation
    from pipelines.rag import RAG, Index

    def reply(prompt: str) -> str:
        if "Latest question:" in prompt:
            return "Sure! " + "Here is a long explanation. " * 40
        return "처용가는 처용이 지었다 [1]."

    model = ScriptedChat(reply)
    chat = RAGConversation(rag=RAG(model=model, index=Index(corpus_index), k=3), store=store)
    session = store.create()
    chat.invoke({"session": session, "message": "처용가는 누가 지었어?"})
    off_topic = chat.invoke({"session": session, "message": "quantum chromodynamics lattice?"})
    assert off_topic.question == "quantum chromodynamics lattice?"  # the ramble was dropped
    assert off_topic.answer.abstained and not off_topic.answer.citations


def test_rag_chat_from_the_cli(
    fake_model: ScriptedChat,
    corpus_index: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    fake_model.recorder.script = lambda prompt: (
        "처용가는 누가 지었어?" if "Latest question:" in prompt
        else "처용가는 처용이 지었다고 전하는 향가이다 [1]."
    )  # fmt: skip
    turns = "처용가는 어떤 노래야?\n그건 누가 지었어?\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(turns.encode())))
    result = run_cli(capsys, "rag", "chat", "--index", str(corpus_index), "--lines", "--verbose",
                     "--session", "docs")  # fmt: skip
    assert result.code == 0, result.stderr
    assert "standalone question: 처용가는 누가 지었어?" in result.stderr
    assert result.stdout.count("checked answer") == 2 and "cheoyongga.txt" in result.stdout
    again = run_cli(capsys, "chat", "--rag", str(corpus_index), "-c", "그게 다야?", "--json")
    (turn,) = again.json()["turns"]
    assert turn["question"] == "처용가는 누가 지었어?" and turn["answer"]["citations"]
