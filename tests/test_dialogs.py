"""Dialog datasets: saved sessions exported for fine-tuning (dialog JSON, chat JSONL), and
dialog JSON read back as the `dialog` eval task, with the eval harness's cache and resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evals.data import load_dialog_items
from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.chat import Message, SessionStore
from pipelines.chat.dialogs import export, read_dialogs
from pipelines.errors import UsageError
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
EVERYDAY = ROOT / "evals" / "datasets" / "dialog" / "everyday.json"


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    store = SessionStore(tmp_path / "sessions.sqlite")
    store.create("a", system="짧게 답하세요.")
    store.append("a", Message("user", "안녕?"), Message("assistant", "안녕하세요!"))
    store.append("a", Message("user", "긴 얘기 해 줘"),
                 Message("assistant", "옛날 옛적에", {"stopped": True}))  # fmt: skip
    store.append("a", Message("user", "오늘 며칠이야?"), Message("assistant", "11월 30일이에요."))
    store.create("b")
    store.append("b", Message("user", "Hi"), Message("assistant", "Hello."))
    return store


def test_export_as_chat_messages_skips_stopped_answers(store: SessionStore) -> None:
    lines = [json.loads(line) for line in export(store, [], "messages").splitlines()]
    assert lines[0]["messages"] == [
        {"role": "system", "content": "짧게 답하세요."},
        {"role": "user", "content": "안녕?"},
        {"role": "assistant", "content": "안녕하세요!"},
        {"role": "user", "content": "오늘 며칠이야?"},
        {"role": "assistant", "content": "11월 30일이에요."},
    ]
    assert lines[1]["messages"][0] == {"role": "user", "content": "Hi"}


def test_export_as_dialogs_reads_back_as_eval_items(store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "dialogs.json"
    path.write_text(export(store, ["a"], "dialogs"), encoding="utf-8")
    (dialog,) = read_dialogs(path)
    assert [t["speaker"] for t in dialog["conversation"]] == ["user", "system"] * 2
    items = load_dialog_items(path)
    assert [(i.id, i.source, i.references) for i in items] == [
        ("1-1", "안녕?", ["안녕하세요!"]),
        ("1-3", "오늘 며칠이야?", ["11월 30일이에요."]),
    ]
    assert items[1].meta["history"] == [
        {"role": "user", "content": "안녕?"}, {"role": "assistant", "content": "안녕하세요!"},
    ]  # fmt: skip


def test_a_malformed_dialog_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"dialogs": [{"id": 7, "conversation": [{"speaker": "bot", "utterance": 1}]}]}')
    with pytest.raises(UsageError, match=r"dialog 1 \(7\)"):
        read_dialogs(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UsageError, match="holds no dialogs"):
        read_dialogs(bad)


def test_the_shipped_dialogs_make_sixteen_items() -> None:
    items = load_dialog_items(EVERYDAY)
    assert len(items) == 16 and len({i.meta["group"] for i in items}) == 8


def test_the_dialog_task_runs_caches_and_resumes(tmp_path: Path) -> None:
    model = ScriptedChat(lambda prompt: "네, 좋아요.")
    factory: Any = lambda settings: SimpleNamespace(name="fake", model="scripted", chat=model)  # noqa: E731
    spec = load_spec(ROOT / "evals" / "specs" / "dialog.yaml")
    settings = load_settings()
    first = run_spec(spec, tmp_path / "runs", settings=settings, backend_factory=factory)
    assert first["systems"]["base"]["model_calls"] == 16
    assert set(first["systems"]["base"]["metrics"]) == {"chrf", "chrf++", "bleu"}
    assert first["tokenize"] == "char"  # Korean references: character BLEU
    history = model.calls[-1]["prompt"]
    assert "[system] You are a friendly conversation partner." in history
    again = run_spec(spec, tmp_path / "runs2", settings=settings, backend_factory=factory)
    assert again["systems"]["base"]["model_calls"] == 0  # the cache answered everything
    assert again["systems"]["base"]["cached"] == 16


def test_sessions_export_from_the_cli(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("LLAMAPIPE_DATA_DIR", str(store.path.parent))
    out = tmp_path / "out" / "dialogs.json"
    result = run_cli(capsys, "sessions", "export", "a", "b", "--format", "dialogs", "-o", str(out))
    assert result.code == 0, result.stderr
    assert len(read_dialogs(out)) == 2
    jsonl = run_cli(capsys, "sessions", "export", "b")
    assert json.loads(jsonl.stdout)["messages"][1]["content"] == "Hello."
    assert run_cli(capsys, "sessions", "export", "nope").code == 2
    assert run_cli(capsys, "sessions", "export", "--format", "csv").code == 2


@pytest.mark.slow
def test_the_dialog_eval_on_the_embedded_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")
    runs = tmp_path / "runs"
    result = run_cli(capsys, "eval", "run", str(ROOT / "evals/specs/dialog.yaml"),
                     "--out", str(runs), "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    base = result.json()["systems"]["base"]
    assert base["model_calls"] == 16 and 0 <= base["metrics"]["chrf"]["score"] <= 100
    assert (runs / "index.html").exists()
    rerun = run_cli(capsys, "eval", "run", str(ROOT / "evals/specs/dialog.yaml"),
                    "--out", str(runs), "--json")  # fmt: skip
    assert rerun.json()["systems"]["base"]["model_calls"] == 0
