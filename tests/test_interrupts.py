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
import re
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
    """Five samples in threads, each waiting on the model: the issue saw ~16 s and a SIGSEGV.
    The SIGINT comes once the first model call has started (the sandbox is up by then)."""
    marks = tmp_path / "marks"
    report, _ = interrupted(
        tmp_path, "--model-delay", "20", "--program", ANSWER, "--file-marks", str(marks),
        "--wait-for", str(marks / "model-1"), "--", "pal", "ask", "q?", "--samples", "5",
        after=0.3,
    )  # fmt: skip
    assert (marks / "model-1").exists()
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
        tmp_path, "--model-delay", "1", "--program", "번역", "--wait-for-line",
        "runs/*/results.jsonl", "--", "eval", "run", str(spec), "--out", str(out), after=0.3,
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


def _korean_docs(folder: Path, n: int, size: int = 40) -> Path:
    folder.mkdir()
    para = "향가는 신라 사람들이 향찰로 적은 노래이며 학자마다 읽는 법이 조금씩 다르다. " * size
    for i in range(n):
        (folder / f"{i:02d}.txt").write_text(f"문서{i}번 표지. {para}", encoding="utf-8")
    return folder


def _sources(tmp_path: Path, index: Path) -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "rag", "sources", "--index", str(index), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    return sorted(Path(s["source"]).relative_to(tmp_path).as_posix()
                  for s in json.loads(listed.stdout)["sources"])  # fmt: skip


def _ingest_again(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(HELPER), *args, "--", "rag", "ingest", "docs", "--index", "index",
         "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1])["exit"] == 0, done.stderr
    return json.loads("\n".join(lines[:-1]))


def test_rag_ingest_interrupted_keeps_exactly_the_files_it_listed(tmp_path: Path) -> None:
    """A real SIGINT once some files are done: the message names exactly the files that
    are in the index (each was committed before its line), they are found there, and the
    same command again adds the rest, losing nothing."""
    _korean_docs(tmp_path / "docs", 12)
    index = tmp_path / "index"
    marks = tmp_path / "marks"
    _, stderr = interrupted(
        tmp_path, "--file-delay", "0.5", "--file-marks", str(marks), "--wait-for",
        str(marks / "4"), "--", "rag", "ingest", "docs", "--index", "index", after=0.3,
    )  # fmt: skip
    listed = re.findall(r"^added\s+(docs/\d\d\.txt) ", stderr, re.M)
    assert 4 <= len(listed) < 12, stderr
    assert f"the {len(listed)} files listed above as added, updated or unchanged are in" in stderr
    assert "no other file was added" in stderr and "run the same command again" in stderr
    assert _sources(tmp_path, index) == sorted(listed), "listed is exactly what is in it"
    from pipelines.rag import Index

    found = Index(index, create=False)
    for name in listed:  # each listed file's own words are found in the index
        i = int(Path(name).stem)
        (hit,) = [h for h in found.search(f"문서{i}번", k=20) if f"문서{i}번" in h.chunk.text]
        assert hit.chunk.source.endswith(name)
    again = _ingest_again(tmp_path)
    assert again["totals"]["unchanged"] == len(listed)
    assert again["totals"]["added"] == 12 - len(listed)
    assert len(_sources(tmp_path, index)) == 12


def test_rag_ingest_interrupted_before_any_file_says_none_was_committed(tmp_path: Path) -> None:
    _korean_docs(tmp_path / "docs", 3, size=2)
    marks = tmp_path / "marks"
    _, stderr = interrupted(
        tmp_path, "--file-delay", "30", "--file-marks", str(marks), "--wait-for",
        str(marks / "reading-1"), "--", "rag", "ingest", "docs", "--index", "index", after=0.5,
    )  # fmt: skip
    assert "no file was committed yet" in stderr
    assert "listed above" not in stderr
    assert not (marks / "1").exists(), "interrupted while the first file was being read"
    assert _sources(tmp_path, tmp_path / "index") == []


def test_rag_ingest_interrupted_with_json_names_the_committed_files(tmp_path: Path) -> None:
    _korean_docs(tmp_path / "docs", 10, size=2)
    marks = tmp_path / "marks"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(HELPER), "--file-delay", "0.5", "--file-marks", str(marks),
         "--wait-for", str(marks / "3"), "--interrupt-after", "0.3", "--twice", "--", "rag",
         "ingest", "docs", "--index", "index", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1])["exit"] == 130, done.stderr
    doc = json.loads("\n".join(lines[:-1]))
    assert doc["interrupted"] is True
    committed = sorted(Path(s).relative_to(tmp_path).as_posix() for s in doc["committed"])
    assert 3 <= len(committed) < 10
    assert committed == _sources(tmp_path, tmp_path / "index")
    assert f"the {len(committed)} files listed in the JSON output" in done.stderr


def test_rag_ingest_interrupted_in_the_vectors_says_which_chunks_lack_them(
    tmp_path: Path,
) -> None:
    """Files all in, vectors half-way (slow embeddings, 64 chunks a batch): the message
    says so and how to finish; the same command again adds the missing vectors."""
    _korean_docs(tmp_path / "docs", 6, size=250)  # ~16 chunks each: two batches
    marks = tmp_path / "marks"
    _, stderr = interrupted(
        tmp_path, "--embed-delay", "2", "--file-marks", str(marks), "--wait-for",
        str(marks / "embed-1"), "--", "rag", "ingest", "docs", "--index", "index", after=0.5,
    )  # fmt: skip
    assert re.search(r"the 6 files listed above .* are in the index", stderr), stderr
    lacking = re.search(r"; (\d+) chunks in it have no vectors yet", stderr)
    assert lacking, stderr
    assert "the missing vectors are added" in stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "index" / "index.sqlite") as db:
        chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        vectors = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    assert chunks - vectors == int(lacking.group(1)) > 0
    again = _ingest_again(tmp_path, "--embed-delay", "0")
    assert again["totals"]["unchanged"] == 6
    with sqlite3.connect(tmp_path / "index" / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == chunks


@needs_walls
def test_sandbox_run_says_the_program_was_stopped(tmp_path: Path) -> None:
    (tmp_path / "spin.py").write_text("def solution():\n    while True:\n        pass\n")
    _, stderr = interrupted(tmp_path, "--", "sandbox", "run", "spin.py", "--timeout", "30")
    assert "the program was stopped" in stderr


def test_chat_stops_mid_answer(tmp_path: Path) -> None:
    """The model is slow to answer (20 s): Ctrl-C ends the wait at once."""
    interrupted(tmp_path, "--model-delay", "20", "--program", "hello", "--", "chat", "hi")
