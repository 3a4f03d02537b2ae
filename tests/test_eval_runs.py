"""Eval runs that describe themselves: what each system ran (backend, model and its hash,
prompt, params), how runs are found and exported, and what the CLI's run flags change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    rows = [
        {"id": f"p{i}", "source": f"原文 {i} 東京明期月良",
         "references": [f"서라벌 밝은 달밤에 {i}번째 노래"]}
        for i in range(6)
    ]  # fmt: skip
    return write(tmp_path / "data.jsonl", rows)


def spec_file(tmp_path: Path, body: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_a_system_reading_given_outputs_makes_no_model_calls(tmp_path: Path, dataset: Path) -> None:
    given = write(tmp_path / "given.jsonl", [{"id": f"p{i}", "output": "서라벌"} for i in range(6)])
    spec = load_spec(
        spec_file(
            tmp_path, f"name: given\ndataset: {dataset}\nsystems: [{{name: g, outputs: {given}}}]"
        )
    )
    summary = run_spec(spec, tmp_path / "runs", settings=load_settings(), backend_factory=None)  # type: ignore[arg-type]
    system = summary["systems"]["g"]
    assert system["model_calls"] == 0 and system["cached"] == 0 and system["given"] == 6
    report = (tmp_path / "runs" / summary["run_id"] / "report.md").read_text(encoding="utf-8")
    assert "| given outputs |" in report and "| g | " in report


def test_a_dialog_system_without_a_prompt_uses_the_tasks_prompt(
    tmp_path: Path, use_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        f"name: dlg\ntask: dialog\ndataset: {ROOT / 'evals/datasets/dialog/everyday.json'}\n"
        "systems: [{name: base}]\nmetrics: [chrf]\n"
    )
    spec = load_spec(spec_file(tmp_path, body))
    assert spec.systems[0].prompt == "dialog/next_turn"
    model = use_model(ScriptedChat(lambda prompt: "네, 좋아요."))
    path = spec_file(tmp_path, body)
    r = run_cli(capsys, "eval", "run", str(path), "--out", str(tmp_path / "runs"), "--json")
    assert r.code == 0, r.stderr
    assert r.json()["systems"]["base"]["model_calls"] == 16 == len(model.calls)
    assert "[system] You are a friendly conversation partner." in model.calls[-1]["prompt"]
