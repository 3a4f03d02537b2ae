"""Ctrl-C, with real signals, on the console script as users run it.

Every long command stops at the first SIGINT (not after the model calls still running in
other threads), says "interrupted" and what was kept, exits 130, and a second SIGINT during
the clean-up changes nothing: no traceback, no crash. Runs go through tests/subreaper.py,
which also shows nothing was left behind. A scripted model that takes 20 s per reply stands
in for a slow one: a command that waited for it would blow the subprocess timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_walls

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("subreaper.py")
ROOT = HELPER.parents[1]
ANSWER = "```python\ndef solution():\n    return 84\n```"


def interrupted(tmp_path: Path, *args: str, after: float = 2.0) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(HELPER), "--interrupt-after", str(after), "--twice", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,  # the slow model alone would take minutes
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    stderr = done.stderr
    assert report["exit"] == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert report["left"] == []
    return report, stderr


@needs_walls
def test_pal_ask_with_samples_stops_at_once(tmp_path: Path) -> None:
    """Five samples in threads, each waiting on the model: the issue saw ~16 s and a SIGSEGV."""
    report, _ = interrupted(
        tmp_path, "--model-delay", "20", "--program", ANSWER, "--", "pal", "ask", "q?",
        "--samples", "5",
    )  # fmt: skip
    print("stopped", report["seconds_after_interrupt"], "s after the first SIGINT")


@needs_walls
def test_pal_run_says_how_far_it_got(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    rows = [{"id": str(i), "question": f"{i} + {i}?", "answer": 2 * i} for i in range(20)]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, stderr = interrupted(
        tmp_path, "--model-delay", "1", "--program", ANSWER, "--", "pal", "run", str(dataset),
        after=3.0,
    )  # fmt: skip
    assert "of 20 problems" in stderr and "--limit" in stderr


def test_eval_run_keeps_finished_outputs_and_resumes(tmp_path: Path) -> None:
    spec = ROOT / "evals" / "specs" / "demo.yaml"
    out = tmp_path / "runs"
    _, stderr = interrupted(
        tmp_path, "--model-delay", "1", "--program", "번역", "--", "eval", "run", str(spec),
        "--out", str(out), after=3.5,
    )  # fmt: skip
    assert "finished outputs kept in" in stderr and "again to resume" in stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    kept = (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert 1 <= len(kept) < 10, "some outputs finished, not all"
    assert f"{len(kept)} finished outputs" in stderr
    # The same command again finishes the same run.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(HELPER), "--program", "번역", "--", "eval", "run", str(spec),
         "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1])["exit"] == 0, done.stderr
    assert [p for p in out.iterdir() if p.is_dir()] == [run_dir]
    assert (run_dir / "summary.json").exists()


def test_rag_ingest_interrupted_adds_nothing_half_way(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    para = "향가는 신라 사람들이 향찰로 적은 노래이며 학자마다 읽는 법이 조금씩 다르다. " * 400
    for i in range(60):  # ~6 MB of Korean: morpheme analysis takes well over the 2 s below
        (docs / f"{i:02d}.txt").write_text(f"{i}번 문서. {para}", encoding="utf-8")
    index = tmp_path / "index"
    _, stderr = interrupted(tmp_path, "--", "rag", "ingest", str(docs), "--index", str(index))
    assert "no other file was added" in stderr
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "rag", "sources", "--index", str(index), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["sources"] == [], "the interrupted ingest was rolled back"


@needs_walls
def test_sandbox_run_says_the_program_was_stopped(tmp_path: Path) -> None:
    (tmp_path / "spin.py").write_text("def solution():\n    while True:\n        pass\n")
    _, stderr = interrupted(tmp_path, "--", "sandbox", "run", "spin.py", "--timeout", "30")
    assert "the program was stopped" in stderr


def test_chat_stops_mid_answer(tmp_path: Path) -> None:
    """The model is slow to answer (20 s): Ctrl-C ends the wait at once."""
    interrupted(tmp_path, "--model-delay", "20", "--program", "hello", "--", "chat", "hi")
