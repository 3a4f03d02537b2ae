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


# -- what each system ran ------------------------------------------------------------------


def test_run_json_records_what_each_system_ran(
    tmp_path: Path, dataset: Path, use_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(ScriptedChat(lambda prompt: "서라벌 밝은 달밤에", model_name="tiny-chat"))
    given = write(tmp_path / "given.jsonl", [{"id": f"p{i}", "output": "서라벌"} for i in range(6)])
    body = (
        f"name: ran\ndataset: {dataset}\nmetrics: [chrf]\nsystems:\n"
        "  - {name: zs, prompt: hyangga/zero_shot, params: {temperature: 0, seed: 3}}\n"
        f"  - {{name: g, outputs: {given}}}\n"
    )
    out = tmp_path / "runs"
    r = run_cli(capsys, "eval", "run", str(spec_file(tmp_path, body)), "--out", str(out))
    assert r.code == 0, r.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    text = (run_dir / "run.json").read_text(encoding="utf-8")
    assert '"backend": null' not in text and '"model": null' not in text
    ran = json.loads(text)["systems"]
    assert ran["zs"]["backend"] == "scripted" and ran["zs"]["model"] == "tiny-chat"
    assert (
        ran["zs"]["prompt"]["name"] == "hyangga/zero_shot"
        and len(ran["zs"]["prompt"]["sha256"]) == 16
    )
    assert ran["zs"]["params"]["temperature"] == 0 and ran["zs"]["params"]["seed"] == 3
    assert ran["g"]["given"] == str(given) and "backend" not in ran["g"]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["systems"]["zs"]["ran"] == ran["zs"]
    assert "## What ran" in r.stdout and "scripted tiny-chat" in r.stdout
    assert "scripted tiny-chat" in (run_dir / "report.html").read_text(encoding="utf-8")
    history = run_cli(capsys, "eval", "history", str(out))
    assert "scripted tiny-chat" in history.stdout
    assert "scripted tiny-chat" in (out / "index.html").read_text(encoding="utf-8")


def test_a_regression_after_the_model_changed_says_the_model_changed(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        f"name: swap\ndataset: {dataset}\nmetrics: [chrf]\n"
        "systems: [{name: a, prompt: hyangga/zero_shot}]\n"
    )
    path, out = spec_file(tmp_path, body), tmp_path / "runs"
    same = ScriptedChat(lambda p: "서라벌 밝은 달밤에 {}번째 노래", model_name="good-model")
    first = run_spec(load_spec(path), out, settings=load_settings(),
                     backend_factory=lambda s: _fake(same))  # fmt: skip
    assert first["previous"] is None
    again = run_spec(load_spec(path), out, settings=load_settings(),
                     backend_factory=lambda s: _fake(same))  # fmt: skip
    assert again["previous"]["changed"] == {}, "the same model: nothing to say"
    worse = ScriptedChat(lambda p: "모름", model_name="other-model")
    summary = run_spec(load_spec(path), out, settings=load_settings(),
                       backend_factory=lambda s: _fake(worse))  # fmt: skip
    (regression,) = summary["previous"]["regressions"]
    assert regression["changed"] == ["ran fake good-model, now fake other-model"]
    report = (out / summary["run_id"] / "report.md").read_text(encoding="utf-8")
    assert "**a changed since then**" in report and "other-model" in report
    assert "**yes** (ran differently)" in report
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    compared = run_cli(capsys, "eval", "report", str(out), "--compare", runs[1], runs[2])
    assert "a ran differently: ran fake good-model, now fake other-model" in compared.stdout


def _fake(chat: ScriptedChat) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(name="fake", model=chat.model_name, chat=chat)


def test_providers_pin_their_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.backends.ollama_probe import OllamaStatus
    from pipelines.backends.provider import Backend
    from pipelines.backends.providers import embedded, ollama, openai

    status = OllamaStatus("http://h:1", True, "0.6", [{"name": "llama3.1:8b", "digest": "abc123"}])
    provider = ollama.provider(probe=lambda host, timeout: status)
    backend = Backend("ollama", "llama3.1:8b", None, None, None, "")  # type: ignore[arg-type]
    settings = load_settings({"backend": "ollama"})
    assert provider.identity is not None
    assert provider.identity(settings, backend) == {"host": "http://h:1", "digest": "abc123"}
    served = Backend("openai", "qwen-7b", None, None, None, "")  # type: ignore[arg-type]
    assert openai.identity(settings, served)["served_model"] == "qwen-7b"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    model = Backend("embedded", "m", None, None, None, "", gguf=gguf)  # type: ignore[arg-type]
    first = embedded.identity(settings, model)
    import hashlib

    assert first == {"gguf": str(gguf), "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}
    reads: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *a: Any, **kw: Any) -> Any:
        if self == gguf:
            reads.append(self)
        return real_open(self, *a, **kw)

    monkeypatch.setattr(Path, "open", counting_open)
    assert embedded.identity(settings, model) == first and reads == [], "hashed once, then cached"
    gguf.write_bytes(b"GGUF" + b"\1" * 100)  # another file at the same path: hashed again
    assert embedded.identity(settings, model)["sha256"] != first["sha256"] and reads


# -- the CLI: finding runs, exporting items, the run's own flags ------------------------------


def _spec_with_given(tmp_path: Path, dataset: Path) -> Path:
    given = write(tmp_path / "given.jsonl", [{"id": f"p{i}", "output": "서라벌"} for i in range(6)])
    return spec_file(
        tmp_path,
        f"name: cli\ndataset: {dataset}\nmetrics: [chrf]\n"
        f"systems: [{{name: g, outputs: {given}}}]\n",
    )


def test_eval_report_takes_the_run_id_it_printed_or_latest(
    tmp_path: Path,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _spec_with_given(tmp_path, dataset)
    out = tmp_path / "runs"
    ids = [run_cli(capsys, "eval", "run", str(path), "--out", str(out), "--json").json()["run_id"]
           for _ in range(2)]  # fmt: skip
    by_id = run_cli(capsys, "eval", "report", ids[0], "--out", str(out), "--json")
    assert by_id.code == 0 and by_id.json()["run_id"] == ids[0]
    latest = run_cli(capsys, "eval", "report", "latest", "--out", str(out), "--json")
    assert latest.json()["run_id"] == ids[1]
    monkeypatch.setenv("LLAMAPIPE_DATA_DIR", str(tmp_path))  # the default runs folder: data/evals
    (tmp_path / "evals").mkdir()
    nothing = run_cli(capsys, "eval", "report", "latest")
    assert nothing.code == 2 and "no finished run latest" in nothing.stderr
    wrong = run_cli(capsys, "eval", "report", "20990101T000000000Z-x", "--out", str(out))
    assert wrong.code == 2 and ids[1] in wrong.stderr, "the hint names the runs there"
    md = run_cli(capsys, "eval", "report", ids[1], "--out", str(out))
    assert md.stdout.startswith("# cli — run "), "piped: Markdown as it is"


def test_eval_report_exports_items_as_csv_and_jsonl(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    path = _spec_with_given(tmp_path, dataset)
    out = tmp_path / "runs"
    run_id = run_cli(capsys, "eval", "run", str(path), "--out", str(out), "--json").json()["run_id"]
    r = run_cli(capsys, "eval", "report", run_id, "--out", str(out), "-o", str(tmp_path / "i.csv"))
    assert r.code == 0 and "6 items" in r.stderr
    with (tmp_path / "i.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["system"] == "g" and rows[0]["output"] == "서라벌"
    assert rows[0]["references"] == "서라벌 밝은 달밤에 0번째 노래" and float(rows[0]["chrf"]) > 0
    r = run_cli(
        capsys, "eval", "report", run_id, "--out", str(out), "-o", str(tmp_path / "i.jsonl")
    )
    lines = [json.loads(x) for x in (tmp_path / "i.jsonl").read_text("utf-8").splitlines()]
    assert len(lines) == 6 and lines[0]["references"] == ["서라벌 밝은 달밤에 0번째 노래"]
    bad = run_cli(
        capsys, "eval", "report", run_id, "--out", str(out), "-o", str(tmp_path / "i.xls")
    )
    assert bad.code == 2 and ".csv or .jsonl" in bad.stderr and not (tmp_path / "i.xls").exists()


def test_eval_run_limit_backend_and_model_are_recorded_in_the_run(
    tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str], use_model: Any
) -> None:
    model = use_model(ScriptedChat(lambda prompt: "서라벌"))
    given = write(tmp_path / "given.jsonl", [{"id": f"p{i}", "output": "서라벌"} for i in range(6)])
    body = (
        f"name: flags\ndataset: {dataset}\nmetrics: [chrf]\nsystems:\n"
        "  - {name: a, prompt: hyangga/zero_shot, backend: embedded, model: /no/such.gguf}\n"
        f"  - {{name: g, outputs: {given}}}\n"
    )
    out = tmp_path / "runs"
    r = run_cli(capsys, "eval", "run", str(spec_file(tmp_path, body)), "--out", str(out),
                "--limit", "2", "--backend", "scripted", "--json")  # fmt: skip
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["items"] == 2 and len(model.calls) == 2
    assert summary["systems"]["a"]["ran"]["backend"] == "scripted"
    assert summary["systems"]["g"]["given"] == 2
    meta = json.loads((out / summary["run_id"] / "run.json").read_text("utf-8"))
    assert meta["spec"]["limit"] == 2 and meta["spec"]["systems"][0]["backend"] == "scripted"
    assert "model" not in meta["spec"]["systems"][0], "the embedded model was not scripted's"
    bad = run_cli(capsys, "eval", "run", str(spec_file(tmp_path, body)), "--backend", "nosuch")
    assert bad.code == 2 and "unknown backend 'nosuch'" in bad.stderr
    takes_none = run_cli(capsys, "eval", "run", str(spec_file(tmp_path, body)), "--out", str(out),
                         "--backend", "scripted", "--model", "x")  # fmt: skip
    assert takes_none.code == 2 and "takes no `model`" in takes_none.stderr


def test_eval_report_on_a_terminal_is_rendered_markdown(
    tmp_path: Path,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from llamapipe_app.commands import evals as commands

    path = _spec_with_given(tmp_path, dataset)
    out = tmp_path / "runs"
    assert run_cli(capsys, "eval", "run", str(path), "--out", str(out), "--json").code == 0
    screen = io.StringIO()
    monkeypatch.setattr(commands, "out", Console(file=screen, force_terminal=True, width=100))
    assert run_cli(capsys, "eval", "report", "latest", "--out", str(out)).code == 0
    shown = screen.getvalue()
    assert "What ran" in shown and "| system |" not in shown and "─" in shown, "tables drawn"


# -- scheduled runs pin what they were made with ------------------------------------------------


def test_a_schedule_pins_the_backend_and_model_auto_chose(
    tmp_path: Path,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.backends import ollama_probe as ollama
    from pipelines.backends.gguf import default_gguf
    from pipelines.backends.ollama_probe import OllamaStatus

    path = spec_file(
        tmp_path,
        f"name: pin\ndataset: {dataset}\nsystems: [{{name: s, prompt: hyangga/zero_shot}}]\n",
    )
    here = OllamaStatus("http://10.0.0.5:11434", True, "0.6", [{"name": "llama3.1:8b"}])
    monkeypatch.setattr(ollama, "probe", lambda host, timeout: here)  # Ollama is up now
    monkeypatch.setenv("OLLAMA_HOST", "http://10.0.0.5:11434")  # from the shell: not in cron
    from evals.schedule import read_cron_line

    r = run_cli(capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *")
    assert r.code == 0, r.stderr
    pinned = read_cron_line(r.stdout.strip())["pinned"]  # from the script the line runs
    assert list(pinned)[:2] == ["LLAMAPIPE_BACKEND", "LLAMAPIPE_OLLAMA_MODEL"]
    assert (pinned["LLAMAPIPE_BACKEND"], pinned["LLAMAPIPE_OLLAMA_MODEL"]) == (
        "ollama", "llama3.1:8b",
    )  # fmt: skip
    assert pinned["LLAMAPIPE_OLLAMA_HOST"] == "http://10.0.0.5:11434"
    timer = run_cli(capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--systemd")
    assert 'Environment="LLAMAPIPE_BACKEND=ollama"\n' in timer.stdout
    assert 'Environment="LLAMAPIPE_OLLAMA_MODEL=llama3.1:8b"\n' in timer.stdout
    gone = OllamaStatus("http://10.0.0.5:11434", False, error="connection refused")
    monkeypatch.setattr(ollama, "probe", lambda host, timeout: gone)
    monkeypatch.delenv("OLLAMA_HOST")
    embedded = run_cli(capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *")
    pinned = read_cron_line(embedded.stdout.strip())["pinned"]
    assert (pinned["LLAMAPIPE_BACKEND"], pinned["LLAMAPIPE_GGUF"]) == (
        "embedded", str(default_gguf()),
    )  # fmt: skip
    assert pinned["LLAMAPIPE_OLLAMA_HOST"] == "http://127.0.0.1:11434", "the default, pinned"


def test_history_marks_a_system_that_ran_something_else_in_earlier_runs() -> None:
    from llamapipe_app.commands.evals import _ran_last

    def run(model: str) -> dict[str, Any]:
        return {
            "systems": {"a": {"chrf": 1.0}},
            "ran": {"a": {"backend": "ollama", "model": model}},
        }

    assert _ran_last([run("x:1"), run("x:1")], "a") == "ollama x:1"
    assert _ran_last([run("x:1"), run("y:2")], "a") == "ollama y:2 (changed)"
    assert _ran_last([{"systems": {"a": {"chrf": 1.0}}}], "a") == "not recorded"
