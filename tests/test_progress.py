"""Progress on long work, as a person at a terminal sees it (the CLI in a real pty).

- `rag ingest` prints each file's line as that file is committed, not at the end, under a
  bar with a count, elapsed time, ETA and rate; it says which files it passed over.
- `eval run`, `pal run` and `pal ask --samples K` show elapsed time and ETA; on a backend
  that answers one call at a time, `--samples K` first says the K run one after another.
- Before a streamed answer's first token, a spinner says `reading the prompt (~N tokens)`.

The CLI runs through tests/progress_cli.py, with slow stand-ins (tests/slow.py): a slow
disk, a model slow to its first token.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("progress_cli.py")
ANSWER = "```python\ndef solution():\n    return 84\n```"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


OPEN: list[Terminal] = []


@pytest.fixture(autouse=True)
def _closed_terminals() -> Iterator[None]:
    """Every pty this test opened is closed after it (its child killed if still there), so
    no descriptor outlives the test (other tests count them)."""
    yield
    while OPEN:
        OPEN.pop().close()


class Terminal:
    """The CLI on a pseudo-terminal (a colour terminal 200 columns wide): read as it prints."""

    def __init__(self, *args: str, cwd: Path, driver: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color",
               "COLUMNS": "200", "LINES": "50"}  # fmt: skip
        env.pop("NO_COLOR", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            argv = [sys.executable, str(DRIVER), *driver, "--", *args]
            os.execve(sys.executable, argv, env)
        self.raw = ""
        self.code: int | None = None
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        OPEN.append(self)

    def close(self) -> None:
        if self.code is None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    @property
    def seen(self) -> str:
        """What was shown, escape sequences and carriage returns left out."""
        return ANSI.sub("", self.raw)

    def _read(self, timeout: float) -> bool:
        if not select.select([self.fd], [], [], timeout)[0]:
            return False
        try:
            self.raw += self._decode(os.read(self.fd, 4096))
        except OSError:  # the child closed the terminal
            return False
        return True

    def read_until(self, pattern: str, timeout: float = 90.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.seen)):
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"waited for {pattern!r}; the terminal shows:\n{self.seen}")
        return found

    def running(self) -> bool:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.code = os.waitstatus_to_exitcode(status)
        return self.code is None

    def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                while self._read(0.05):
                    pass
                assert self.code is not None
                return self.code
            with contextlib.suppress(OSError):
                self._read(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the command did not end:\n{self.seen}")


def _docs(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:02d}.txt").write_text(f"{i}번 문서. 향가는 신라의 노래이다.\n" * 20)
    return folder


# -- rag ingest -------------------------------------------------------------------------------


def test_ingest_prints_each_file_as_it_is_committed_under_a_bar(tmp_path: Path) -> None:
    _docs(tmp_path / "docs", 6)
    term = Terminal(
        "rag", "ingest", "docs", "--index", "idx", cwd=tmp_path, driver=("--file-delay", "0.8")
    )
    term.read_until(r"added\s+docs/00\.txt")
    first = time.monotonic()
    assert term.running(), "the first file's line came before the ingest ended"
    assert "05.txt" not in term.seen, "not all at the end: the last file is not done yet"
    # The bar: files done of all, elapsed time, an ETA, and the rate.
    term.read_until(r"[1-5]/6 files")
    term.read_until(r"\d+:\d\d elapsed, ETA \d+:\d\d")
    term.read_until(r"\d+(\.\d)? ([kM]B|bytes)/s")
    term.read_until(r"added\s+docs/05\.txt")
    assert time.monotonic() - first > 2.5, "the lines came one by one, as files were done"
    assert term.wait() == 0
    for i in range(6):
        assert re.search(rf"added\s+docs/{i:02d}\.txt", term.seen)
    assert "6 added, 0 updated" in term.seen


def test_ingest_passes_over_unsupported_files_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no server to look for: BM25 only
    docs = _docs(tmp_path / "docs", 2)
    (docs / "notes.docx").write_text("x")
    (docs / "slides.docx").write_text("x")
    (docs / "photo.png").write_bytes(b"\x89PNG")
    (docs / ".hidden.bin").write_text("x")  # hidden files are left out, not counted
    r = run_cli(capsys, "rag", "ingest", str(docs), "--index", str(tmp_path / "i"))
    assert r.code == 0, r.stderr
    assert "passed over 3 files (types .docx, .png)" in r.stderr
    j = run_cli(capsys, "rag", "ingest", str(docs), "--index", str(tmp_path / "j"), "--json")
    doc = j.json()
    assert sorted(Path(p).name for p in doc["unsupported"]) == [
        "notes.docx", "photo.png", "slides.docx",
    ]  # fmt: skip
    assert doc["totals"]["added"] == 2 and "passed over" not in j.stderr
    # A folder of nothing but other types says what it passed over.
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.docx").write_text("x")
    r = run_cli(capsys, "rag", "ingest", str(only), "--index", str(tmp_path / "k"))
    assert r.code == 2 and "passed over 1 files of other types" in r.stderr


# -- eval run, pal run, pal ask --samples -----------------------------------------------------


def test_eval_run_shows_elapsed_and_eta(tmp_path: Path) -> None:
    spec = ROOT / "evals" / "specs" / "demo.yaml"
    term = Terminal(
        "eval", "run", str(spec), "--out", "runs", cwd=tmp_path,
        driver=("--reply", "번역", "--first-delay", "0.3"),
    )  # fmt: skip
    term.read_until(r"\d+/\d+ outputs")
    term.read_until(r"\d+:\d\d elapsed, ETA \d+:\d\d")
    assert term.wait(120) == 0, term.seen


@pytest.fixture
def unsafe_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """PAL's programs run without the OS walls: these tests watch progress, not the walls."""
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_ISOLATION", "unsafe")


def test_pal_run_shows_elapsed_and_eta(tmp_path: Path, unsafe_sandbox: None) -> None:
    dataset = tmp_path / "d.jsonl"
    rows = [{"id": str(i), "question": f"{i} + {i}?", "answer": 84} for i in range(8)]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    term = Terminal(
        "pal", "run", str(dataset), cwd=tmp_path, driver=("--reply", ANSWER, "--first-delay", "0.4")
    )
    term.read_until(r"\d/8 problems")
    term.read_until(r"\d+:\d\d elapsed, ETA \d+:\d\d")
    assert term.wait() == 0, term.seen


def test_pal_ask_samples_warns_and_shows_a_bar(tmp_path: Path, unsafe_sandbox: None) -> None:
    term = Terminal(
        "pal", "ask", "What is 6 * 14?", "--samples", "3", cwd=tmp_path,
        driver=("--reply", ANSWER, "--first-delay", "0.6"),
    )  # fmt: skip
    term.read_until(r"--samples 3 on the scripted model runs 3 generations one after another")
    term.read_until(r"\d/3 samples")
    term.read_until(r"\d+:\d\d elapsed, ETA \d+:\d\d")
    assert term.wait() == 0, term.seen
    assert "answer: 84" in term.seen


def test_samples_warning_only_where_calls_run_one_at_a_time(
    capsys: pytest.CaptureFixture[str],
    use_model: Callable[..., Any],
    unsafe_sandbox: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_model(ScriptedChat(lambda prompt: ANSWER))
    many = run_cli(capsys, "pal", "ask", "6 * 14?", "--samples", "4")
    assert many.code == 0, many.stderr
    assert "runs 4 generations one after another" in many.stderr
    assert "up to ~" in many.stderr  # roughly how long
    one = run_cli(capsys, "pal", "ask", "6 * 14?")
    assert "one after another" not in one.stderr
    monkeypatch.setenv("LLAMAPIPE_CONCURRENCY", "4")  # a backend that serves several at once
    served = run_cli(capsys, "pal", "ask", "6 * 14?", "--samples", "4")
    assert "one after another" not in served.stderr


# -- the first token's wait -------------------------------------------------------------------

READING = r"reading the prompt \(~\d+ tokens\)"


def test_chat_says_it_is_reading_the_prompt_until_the_first_token(tmp_path: Path) -> None:
    term = Terminal(
        "chat", "Tell me about hyangga.", cwd=tmp_path,
        driver=("--reply", "Hyangga are old Korean songs.", "--first-delay", "2"),
    )  # fmt: skip
    shown = term.read_until(READING)
    assert "Hyangga are" not in term.seen[: shown.end()]
    term.read_until("Hyangga are old Korean songs.")
    assert term.wait() == 0
    # The spinner was erased once the answer began: its line is not left behind.
    assert term.raw.rfind("reading the prompt") < term.raw.find("Hyangga are")


def test_a_session_turn_says_it_is_reading_the_prompt(tmp_path: Path) -> None:
    term = Terminal(
        "chat", "--session", "s", "hello?", cwd=tmp_path,
        driver=("--reply", "Hi there.", "--first-delay", "2"),
    )  # fmt: skip
    term.read_until(READING)
    term.read_until("Hi there.")
    assert term.wait() == 0


def test_the_repl_says_it_is_reading_the_prompt_at_each_turn(tmp_path: Path) -> None:
    term = Terminal(
        "chat", "-i", "--session", "r", cwd=tmp_path,
        driver=("--reply", "Hi there.", "--first-delay", "1.5"),
    )  # fmt: skip
    for turn in range(2):
        term.read_until("›" + "[^›]*›" * turn)  # the prompt for this turn
        time.sleep(0.1)
        os.write(term.fd, f"hello {turn}\r".encode())
        term.read_until(rf"hello {turn}[\s\S]*{READING}")
        term.read_until(rf"hello {turn}[\s\S]*Hi there\.")
    term.read_until("›[^›]*›[^›]*›")
    time.sleep(0.1)
    os.write(term.fd, b"\x04")
    assert term.wait() == 0


def test_rag_ask_says_it_is_reading_the_prompt(tmp_path: Path) -> None:
    from pipelines.rag import Index

    docs = _docs(tmp_path / "docs", 2)
    Index(tmp_path / "idx").ingest([docs])
    term = Terminal(
        "rag", "ask", "향가는 무엇인가?", "--index", "idx", cwd=tmp_path,
        driver=("--reply", "향가는 신라의 노래이다 [1].", "--first-delay", "2"),
    )  # fmt: skip
    term.read_until(READING)
    term.read_until("checked answer")
    assert term.wait() == 0


def test_no_spinner_or_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _docs(tmp_path / "docs", 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(DRIVER), "--", "rag", "ingest", "docs", "--index", "idx", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["added"] == 2
    assert "elapsed" not in done.stderr and "\x1b[" not in done.stderr
