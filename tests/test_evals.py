"""The eval harness: specs, the hyangga dataset, metrics, cache, resume, history, reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evals.context import RunContext, backend_for
from evals.data import load_translation
from evals.metrics import corpus_scores
from evals.runner import read_results, run_spec
from evals.schedule import AlreadyRunning, cron_line, read_cron_line, run_lock
from evals.spec import SystemSpec, load_spec
from evals.tasks import TASKS, register
from evals.tasks.answers import AnswerTask
from evals.tasks.translate import few_shot_examples, render
from pipelines.budget import budget_for
from pipelines.errors import UsageError
from pipelines.settings import load_settings
from tests.cli_helpers import run_cli
from tests.conftest import needs_walls
from tests.fakes import ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
HYANGGA = ROOT / "evals" / "datasets" / "hyangga.jsonl"


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    rows = [
        {"id": f"p{i}", "source": f"原文 {i} 東京明期月良", "references": [f"서라벌 밝은 달밤에 {i}번째 노래를 부른다."],
         "meta": {"poem": f"poem{i // 2}"}}
        for i in range(6)
    ]  # fmt: skip
    return write(tmp_path / "data.jsonl", rows)


def outputs(tmp_path: Path, name: str, cut: int) -> Path:
    rows = [
        {"id": f"p{i}", "output": f"서라벌 밝은 달밤에 {i}번째 노래를 부른다."[:cut]}
        for i in range(6)
    ]
    return write(tmp_path / f"{name}.jsonl", rows)


def spec_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def fake_factory(model: ScriptedChat) -> Any:
    return lambda settings: SimpleNamespace(name="fake", model="scripted", chat=model)


# -- spec and dataset ------------------------------------------------------------------------


def test_bad_specs_name_the_file_and_field(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(UsageError, match=r"spec.yaml: systems.0.shots"):
        load_spec(
            spec_file(
                tmp_path,
                f"name: x\ndataset: {dataset}\nsystems: [{{name: a, prompt: p, shots: -1}}]",
            )
        )
    with pytest.raises(UsageError, match="metric"):
        load_spec(
            spec_file(
                tmp_path,
                f"name: x\ndataset: {dataset}\nsystems: [{{name: a, prompt: p}}]\nmetrics: [rouge]",
            )
        )
    with pytest.raises(UsageError, match="unique"):
        load_spec(
            spec_file(
                tmp_path,
                f"name: x\ndataset: {dataset}\nsystems: [{{name: a, prompt: p}}, {{name: a, prompt: q}}]",
            )
        )
    with pytest.raises(UsageError, match="no such spec"):
        load_spec(tmp_path / "missing.yaml")


def test_bad_dataset_lines_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "source": "x", "references": ["y"]}\n{"id": "b", "source": 3, "references": ["y"]}\n'
    )
    with pytest.raises(UsageError, match=r"bad.jsonl:2: field 'source'"):
        load_translation(bad)


def test_every_hyangga_item_has_provenance_and_licence() -> None:
    items = load_translation(HYANGGA)
    assert len(items) >= 10
    for item in items:
        meta = item.meta
        assert meta.get("source_url", "").startswith("http"), item.id
        assert meta.get("source_licence"), item.id
        assert meta.get("references") and all(
            r.get("licence") and r.get("author") for r in meta["references"]
        ), item.id
        assert len(meta["references"]) == len(item.references), item.id
        if "reading" in meta:
            assert meta["reading_provenance"]["licence"].startswith("public domain")
        for banned in ("양주동", "김완진", "Yang Ju", "Kim Wan"):
            assert banned not in json.dumps(meta["references"], ensure_ascii=False)


def test_variant_characters_are_normalised() -> None:
    text = "".join(i.source for i in load_translation(HYANGGA))
    assert not set("肸盻兮慙兒貌陁") & set(text)


def test_local_overlay_adds_references(tmp_path: Path) -> None:
    data = tmp_path / "hy.jsonl"
    shutil.copy(HYANGGA, data)
    (tmp_path / "local").mkdir()
    write(
        tmp_path / "local" / "hy.jsonl",
        [{"id": "cheoyongga", "references": ["내 참고 번역"], "licence": "private"}],
    )
    item = next(i for i in load_translation(data) if i.id == "cheoyongga")
    assert item.references[-1] == "내 참고 번역"


def test_few_shot_is_leave_one_out() -> None:
    items = load_translation(HYANGGA)
    spec = load_spec(ROOT / "evals" / "specs" / "hyangga.yaml")
    few = next(s for s in spec.systems if s.shots)
    for index, item in enumerate(items):
        examples = few_shot_examples(items, index, few.shots)
        assert len(examples) == few.shots
        assert all(ex["source"] != item.source for ex in examples)
        rendered = render(few, items, index)[0].to_string()
        assert rendered.count(item.source) == 1, "the poem appears once: as the question"


def test_few_shot_examples_that_do_not_fit_the_window_are_dropped_and_recorded(
    tmp_path: Path,
) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: tight\ndataset: {HYANGGA}\nsystems: [{{name: few, prompt: hyangga/few_shot, "
            "shots: 5}]\nmetrics: [chrf]",
        )
    )
    model = ScriptedChat(lambda prompt: "서라벌 밝은 달", num_ctx=2048, max_tokens=256)
    run_spec(spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model))
    rows = read_results(next((tmp_path / "runs").glob("*/results.jsonl")))
    budget = budget_for(model)
    items = load_translation(HYANGGA)
    for row, call in zip(rows, model.calls, strict=True):
        assert 0 < row["shots"] < 5, "some examples fit, not all five"
        examples = sum(m.type == "ai" for m in call["messages"])
        assert examples == row["shots"], "the row says what the model was given"
        index = next(i for i, item in enumerate(items) if item.id == row["id"])
        prompt, shots = render(spec.systems[0], items, index, budget)
        assert shots == row["shots"] and budget.fits(prompt)


def test_an_item_too_long_for_the_window_is_recorded_and_the_run_goes_on(
    tmp_path: Path, dataset: Path
) -> None:
    rows = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines()]
    rows[2]["source"] = "東京明期月良夜入伊遊行如可 " * 400
    write(dataset, rows)
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: long\ndataset: {dataset}\nsystems: [{{name: zero, prompt: hyangga/zero_shot}}]"
            "\nmetrics: [chrf]",
        )
    )
    model = ScriptedChat(lambda prompt: "서라벌 밝은 달밤에", num_ctx=2048, max_tokens=128)
    summary = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    results = {r["id"]: r for r in read_results(next((tmp_path / "runs").glob("*/results.jsonl")))}
    assert len(results) == 6 and len(model.calls) == 5, "the long item never reached the model"
    assert results["p2"]["output"] == "" and "2048-token" in results["p2"]["error"]
    assert "error" not in results["p1"]
    assert summary["systems"]["zero"]["model_calls"] == 5


# -- metrics -------------------------------------------------------------------------------------


def test_korean_bleu_uses_characters() -> None:
    hyp, ref = ["서라벌 밝은 달밤에 놀다가"], [["서라벌 밝은 달밤에서 놀았다가"]]
    char = corpus_scores(["bleu"], hyp, ref, "char")["bleu"]
    words = corpus_scores(["bleu"], hyp, ref, "13a")["bleu"]
    assert char["score"] > words["score"], "endings attached to words sink word-level BLEU"
    assert "tok:char" in char["signature"]


# -- runs ---------------------------------------------------------------------------------------------


def test_run_writes_results_summary_and_reports(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            f"""
name: outs
dataset: {dataset}
systems:
  - {{name: full, outputs: {outputs(tmp_path, "full", 100)}}}
  - {{name: half, outputs: {outputs(tmp_path, "half", 10)}}}
""",
        )
    )
    summary = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=lambda s: None
    )
    run_dir = tmp_path / "runs" / summary["run_id"]
    rows = read_results(run_dir / "results.jsonl")
    assert len(rows) == 12 and {r["system"] for r in rows} == {"full", "half"}
    assert set(rows[0]) == {"system", "id", "output", "references", "metrics", "cached"}
    assert set(rows[0]["metrics"]) == {"chrf", "chrf++", "bleu", "ter"}
    full = summary["systems"]["full"]["metrics"]
    assert (
        full["chrf"]["score"] == 100 and full["chrf"]["ci"] and "nc:6" in full["chrf"]["signature"]
    )
    assert summary["tokenize"] == "char" and summary["group_by"] == "poem"
    (pair,) = summary["pairs"]["chrf"]
    assert pair["better"] == "full" and pair["significant"]
    assert (run_dir / "report.md").read_text().startswith("# outs")
    page = (run_dir / "report.html").read_text()
    assert 'id="items"' in page and 'id="scores"' in page  # the trend chart: from run 2
    assert "<del>" in page, "differences from the reference are marked"
    assert not re.search(r"(src|href)=[\"']?https?:|url\(|@import", page), "self-contained"


def test_unchanged_spec_makes_zero_model_calls_the_second_time(
    tmp_path: Path, dataset: Path
) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: cached\ndataset: {dataset}\nsystems: [{{name: a, prompt: hyangga/zero_shot}}]\nmetrics: [chrf]",
        )
    )
    model = ScriptedChat(lambda prompt: "서라벌 밝은 달밤에")
    first = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    second = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    assert first["systems"]["a"]["model_calls"] == 6 and len(model.calls) == 6
    assert second["systems"]["a"]["model_calls"] == 0 and second["systems"]["a"]["cached"] == 6
    assert second["run_id"] != first["run_id"] and second["previous"]["run_id"] == first["run_id"]


def test_an_interrupted_run_resumes_without_repeats(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: resume\ndataset: {dataset}\nsystems: [{{name: a, prompt: hyangga/zero_shot}}, {{name: b, prompt: hyangga/zero_shot, params: {{temperature: 0.5}}}}]\nmetrics: [chrf]",
        )
    )
    calls = []

    def reply(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if killed during the fifth model call
        return "서라벌 밝은 달밤에"

    with pytest.raises(KeyboardInterrupt):
        run_spec(
            spec,
            tmp_path / "runs",
            settings=load_settings(),
            backend_factory=fake_factory(ScriptedChat(reply)),
        )
    (run_dir,) = (tmp_path / "runs").iterdir()
    with (run_dir / "results.jsonl").open("a") as f:
        f.write('{"system": "a", "id": "torn')  # a line cut short by the kill
    summary = run_spec(
        spec,
        tmp_path / "runs",
        settings=load_settings(),
        backend_factory=fake_factory(ScriptedChat(reply)),
    )
    assert summary["run_id"] == run_dir.name and summary["resumed"]
    rows = read_results(run_dir / "results.jsonl")
    keys = [(r["system"], r["id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12, "none lost, none repeated"
    assert len(calls) == 12 + 1, "only the unfinished items were asked again"
    resumed = {name: info["resumed"] for name, info in summary["systems"].items()}
    assert resumed == {"a": 4, "b": 0}, "the outputs kept from before are counted as resumed"
    assert "| resumed |" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_regression_against_the_previous_run_fails_a_scheduled_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dataset: Path
) -> None:
    good = outputs(tmp_path, "sys", 100)
    path = spec_file(
        tmp_path,
        f"name: sched\ndataset: {dataset}\nsystems: [{{name: s, outputs: {good}}}]\nmetrics: [chrf]",
    )
    out = tmp_path / "runs"
    assert run_cli(capsys, "eval", "run", str(path), "--out", str(out), "--scheduled").code == 0
    outputs(tmp_path, "sys", 8)  # the same system got much worse
    r = run_cli(capsys, "eval", "run", str(path), "--out", str(out), "--scheduled", "--json")
    assert r.code == 1 and "regressed" in r.stderr
    (regression,) = r.json()["previous"]["regressions"]
    assert regression["system"] == "s" and regression["metric"] == "chrf"
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    compared = run_cli(capsys, "eval", "report", str(out), "--compare", runs[0], runs[1], "--json")
    assert compared.json()["systems"]["s"]["chrf"]["regressed"] is True
    history = run_cli(capsys, "eval", "history", str(out))
    assert history.code == 0 and "sched" in history.stdout
    assert "<svg" in (out / "index.html").read_text()


def test_runs_never_overlap(tmp_path: Path) -> None:
    with run_lock(tmp_path), pytest.raises(AlreadyRunning), run_lock(tmp_path):
        pass


def test_schedule_prints_a_cron_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no Ollama probe: sockets are off
    path = spec_file(
        tmp_path,
        f"name: cron\ndataset: {dataset}\nsystems: [{{name: s, prompt: hyangga/zero_shot}}]",
    )
    r = run_cli(
        capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--out", str(tmp_path / "o")
    )
    assert r.code == 0 and r.stdout.startswith("0 3 * * * ")
    script = Path(read_cron_line(r.stdout.strip())["script"])  # runs `eval run --scheduled`
    assert script.parent == tmp_path / "o" / "schedules" and "--scheduled" in script.read_text()
    assert run_cli(capsys, "eval", "schedule", str(path), "--cron", "every day").code == 2
    assert cron_line("*/5 * * * *", path, tmp_path).endswith(str(path.resolve()))


def test_cli_bad_spec_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = run_cli(capsys, "eval", "run", str(spec_file(tmp_path, "name: [oops")))
    assert r.code == 2 and "Traceback" not in r.stderr


# -- a real kill -9, and the real model ------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path: Path, dataset: Path) -> None:
    path = spec_file(
        tmp_path,
        f"name: killed\ndataset: {dataset}\nsystems: [{{name: a, prompt: hyangga/zero_shot, params: {{max_tokens: 24}}}}, {{name: b, prompt: hyangga/few_shot, shots: 1, params: {{max_tokens: 24}}}}]\nmetrics: [chrf]",
    )
    out = tmp_path / "runs"
    env = {**os.environ, "LLAMAPIPE_BACKEND": "embedded"}
    cmd = [sys.executable, "-m", "cli", "eval", "run", str(path), "--out", str(out), "--json"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    results = None
    while time.time() < deadline:
        found = list(out.glob("*/results.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            results = found[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert results is not None, "the run never got going"
    before = len(read_results(results))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    rows = read_results(results)
    keys = [(r["system"], r["id"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12
    calls = sum(s["model_calls"] for s in summary["systems"].values())
    assert calls <= 12 - before, "finished items were not asked again"


# -- the report in a real browser -----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MEASURE = """<script>
const chart = document.querySelector('svg.chart polyline, svg.chart circle');
const box = chart ? chart.getBBox() : {width: 0, height: 0};
const scores = document.querySelector('#scores').getBoundingClientRect();
const items = document.querySelectorAll('#items tr').length;
document.body.setAttribute('data-measured', JSON.stringify(
  {chart: box.width + box.height, scores: scores.height, items: items}));
</script></body>"""


def _png_pixels_vary(path: Path) -> bool:
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat))) > 20


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path: Path, dataset: Path) -> None:
    spec = load_spec(
        spec_file(
            tmp_path,
            f"""
name: browser
dataset: {dataset}
systems:
  - {{name: full, outputs: {outputs(tmp_path, "full", 100)}}}
  - {{name: half, outputs: {outputs(tmp_path, "half", 12)}}}
""",
        )
    )
    for _ in range(2):  # two runs, so the trend chart has a line
        summary = run_spec(
            spec, tmp_path / "runs", settings=load_settings(), backend_factory=lambda s: None
        )
    report = tmp_path / "runs" / summary["run_id"] / "report.html"
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600"]  # fmt: skip
    shot = tmp_path / "report.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.exists() and _png_pixels_vary(shot), "the screenshot shows a rendered page"
    probe = tmp_path / "measured.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", MEASURE), encoding="utf-8"
    )
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(
        re.search(r"data-measured=\"([^\"]+)\"", dom.stdout).group(1).replace("&quot;", '"')
    )  # type: ignore[union-attr]
    assert measured["chart"] > 0, "the trend chart was laid out"
    assert measured["scores"] > 20, "the scores table was laid out"
    assert measured["items"] == 7, "a header and one row per item"


# -- PAL and RAG tasks -------------------------------------------------------------------------------


@needs_walls
def test_pal_task_scores_accuracy_and_caches(tmp_path: Path) -> None:
    data = write(tmp_path / "pal.jsonl", [
        {"id": "a", "question": "6 times 7?", "answer": 42},
        {"id": "b", "question": "2 plus 2?", "answer": "4"},
    ])  # fmt: skip
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: paltask\ntask: pal\ndataset: {data}\nsystems: [{{name: pal, method: pal}}, {{name: direct, method: direct}}]",
        )
    )

    def reply(prompt: str) -> str:
        if "final answer only" in prompt:
            return "42"  # the direct baseline always says 42
        value = "6 * 7" if "6 times 7?" in prompt else "2 + 2"
        return f"```python\ndef solution():\n    return {value}\n```"

    model = ScriptedChat(reply)
    summary = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    assert summary["systems"]["pal"]["metrics"]["accuracy"]["score"] == 100
    assert summary["systems"]["direct"]["metrics"]["accuracy"]["score"] == 50
    steps: list[tuple[int, int]] = []
    again = run_spec(
        spec,
        tmp_path / "runs",
        settings=load_settings(),
        backend_factory=fake_factory(model),
        on_step=lambda p: steps.append((p.model_calls, p.cached)),
    )
    assert sum(s["model_calls"] for s in again["systems"].values()) == 0
    assert steps[-1] == (0, 4), "the progress line counts what the summary counts"
    # The reports show PAL's items and nothing that belongs to translation.
    run_dir = tmp_path / "runs" / summary["run_id"]
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    items = page[page.index('<table id="items">') :]
    assert items.count("<tr>") == 3 and "6 times 7?" in items and "42" in items
    report_md = (run_dir / "report.md").read_text(encoding="utf-8")
    for text in (page, report_md):
        assert "BLEU tokenizer" not in text and "Signatures" not in text
        assert "reference" not in text.lower()


def test_rag_task_scores_citations_recall_and_abstention(tmp_path: Path) -> None:
    corpus = ROOT / "evals" / "datasets" / "rag" / "corpus"
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: ragtask\ntask: rag\ndataset: {ROOT / 'evals/datasets/rag/questions.jsonl'}\ncorpus: {corpus}\nsystems: [{{name: k3, k: 3}}]\n"
            "metrics: [citation_validity, recall@k, abstention_accuracy]",
        )
    )
    model = ScriptedChat(
        lambda prompt: "Ogura Shinpei published a reading of the hyangga in 1929 [1]."
    )
    settings = load_settings({"backend": "embedded"})  # no embeddings (BM25), no sockets
    summary = run_spec(
        spec, tmp_path / "runs", settings=settings, backend_factory=fake_factory(model)
    )
    metrics = summary["systems"]["k3"]["metrics"]
    assert set(metrics) == {"citation_validity", "recall@k", "abstention_accuracy"}
    assert metrics["abstention_accuracy"]["score"] == 100, (
        "unanswerable ones abstained, the rest did not"
    )
    assert metrics["recall@k"]["score"] >= 75
    assert 0 <= metrics["citation_validity"]["score"] < 100, (
        "a wrong citation on most questions is caught"
    )
    rows = read_results(tmp_path / "runs" / summary["run_id"] / "results.jsonl")
    assert len(rows) == 8 and all("citation_validity" in r["metrics"] for r in rows)
    page = (tmp_path / "runs" / summary["run_id"] / "report.html").read_text(encoding="utf-8")
    items = page[page.index('<table id="items">') :]
    assert items.count("<tr>") == 9 and "Ogura Shinpei" in items


# -- a task declared outside evals/ ------------------------------------------------------------


class Lengths(AnswerTask):
    """A task no part of the harness names: the length of each answer, in characters."""

    name = "lengths"
    metrics = ("length",)

    def load(self) -> list[Any]:
        lines = self.spec.resolve(self.spec.dataset).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def item_id(self, item: Any) -> str:
        return str(item["id"])

    def question(self, item: Any) -> str:
        return str(item["question"])

    def expected(self, item: Any) -> Any:
        return None

    def answer(self, ctx: RunContext, system: SystemSpec, item: Any) -> dict[str, Any]:
        backend, _ = backend_for(ctx, system)
        text = backend.chat.invoke(item["question"]).text
        return {"output": text, "metrics": {"length": float(len(text))}}


@pytest.fixture
def lengths_task() -> Iterator[type[Lengths]]:
    register(Lengths)
    yield Lengths
    del TASKS[Lengths.name]


def test_a_task_registered_elsewhere_is_checked_and_run_by_what_it_declares(
    tmp_path: Path, lengths_task: type[Lengths]
) -> None:
    data = write(
        tmp_path / "q.jsonl", [{"id": "a", "question": "one"}, {"id": "b", "question": "three"}]
    )
    head = f"name: lengths\ntask: lengths\ndataset: {data}\n"
    spec = load_spec(spec_file(tmp_path, head + "systems: [{name: echo}]"))
    assert spec.metrics == ["length"], "its own metrics are the default"
    with pytest.raises(UsageError, match="`k` is for task rag, not lengths"):
        load_spec(spec_file(tmp_path, head + "systems: [{name: echo, k: 3}]"))
    with pytest.raises(UsageError, match=r"task lengths has no metric \['chrf'\]"):
        load_spec(spec_file(tmp_path, head + "systems: [{name: echo}]\nmetrics: [chrf]"))
    with pytest.raises(UsageError, match=r"unknown task 'nosuch'; use one of: .*lengths"):
        load_spec(spec_file(tmp_path, head.replace("lengths", "nosuch") + "systems: [{name: a}]"))
    model = ScriptedChat(lambda prompt: prompt.removeprefix("[human] ") * 2)
    first = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    assert first["task"] == "lengths"
    assert first["systems"]["echo"]["metrics"]["length"]["score"] == 8  # (6 + 10) / 2
    again = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=fake_factory(model)
    )
    assert again["systems"]["echo"]["cached"] == 2 and len(model.calls) == 2
    compared = again["previous"]["systems"]["echo"]["length"]
    assert compared["previous"] == compared["current"] == 8 and not compared["regressed"]


@pytest.mark.parametrize(
    ("cron", "calendar"),
    [
        ("0 3 * * *", "*-*-* 03:00:00"),
        ("*/15 * * * *", "*-*-* *:00/15:00"),
        ("30 8 * * 1-5", "Mon..Fri *-*-* 08:30:00"),
        ("0 0 1 * *", "*-*-01 00:00:00"),
    ],
)
def test_cron_schedules_become_systemd_calendars(cron: str, calendar: str) -> None:
    from evals.schedule import on_calendar

    assert on_calendar(cron) == calendar
    analyze = shutil.which("systemd-analyze")
    if analyze:  # where systemd is there, it must accept the expression too
        done = subprocess.run([analyze, "calendar", calendar], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_schedule_systemd_prints_and_installs_a_user_timer(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    dataset: Path,
    isolated_user_state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no Ollama probe: sockets are off
    path = spec_file(
        tmp_path,
        f"name: timer\ndataset: {dataset}\nsystems: [{{name: s, prompt: hyangga/zero_shot}}]",
    )
    r = run_cli(capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--systemd")
    assert r.code == 0 and "OnCalendar=*-*-* 03:00:00" in r.stdout and "--scheduled" in r.stdout
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no systemctl: write the units only
    r = run_cli(
        capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--systemd", "--install"
    )
    units = sorted(p.name for p in (isolated_user_state / ".config" / "systemd" / "user").iterdir())
    assert r.code == 0 and units == ["llamapipe-eval-spec.service", "llamapipe-eval-spec.timer"]
    assert "systemctl --user enable --now" in r.stderr


def test_a_first_run_shows_no_trend_chart(tmp_path: Path, dataset: Path) -> None:
    """One point is not a trend: the report says when trends will appear instead."""
    spec = load_spec(
        spec_file(
            tmp_path,
            f"name: once\ndataset: {dataset}\nsystems: [{{name: a, outputs: {outputs(tmp_path, 'a', 50)}}}]",
        )
    )
    summary = run_spec(
        spec, tmp_path / "runs", settings=load_settings(), backend_factory=lambda s: None
    )
    page = (tmp_path / "runs" / summary["run_id"] / "report.html").read_text(encoding="utf-8")
    assert "<svg" not in page and "trends appear from the second" in page
    index = (tmp_path / "runs" / "index.html").read_text(encoding="utf-8")
    assert "<svg" not in index and "One run so far" in index


def test_schedule_install_without_crontab_gives_the_line_to_add(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no Ollama probe: sockets are off
    path = spec_file(
        tmp_path,
        f"name: cron\ndataset: {dataset}\nsystems: [{{name: s, prompt: hyangga/zero_shot}}]",
    )
    monkeypatch.setattr(shutil, "which", lambda name: None)
    r = run_cli(capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--install")
    assert r.code == 2 and "no `crontab` command here" in r.stderr
    hint = next(line for line in r.stderr.splitlines() if line.startswith("hint:"))
    assert "0 3 * * *" in hint and "llamapipe-eval-spec-" in hint, "the line, to add by hand"


def test_schedule_systemd_failure_says_what_was_done_and_what_is_left(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    dataset: Path,
    isolated_user_state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "embedded")  # no Ollama probe: sockets are off
    path = spec_file(
        tmp_path,
        f"name: timer\ndataset: {dataset}\nsystems: [{{name: s, prompt: hyangga/zero_shot}}]",
    )
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    (fake / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    r = run_cli(
        capsys, "eval", "schedule", str(path), "--cron", "0 3 * * *", "--systemd", "--install"
    )
    assert r.code == 2 and "the units are written" in r.stderr and "Failed to connect" in r.stderr
    assert "systemctl --user enable --now llamapipe-eval-spec.timer" in r.stderr


def test_item_diff_marks_differences_but_not_a_wholly_different_output() -> None:
    from evals.report import diff_segments

    close = diff_segments("서라벌 밝은 달에", "서라벌 밝은 달밤에")
    assert ("ins", "밤") in close and close[0] == ("equal", "서라벌 밝은 달")
    assert "".join(text for op, text in close if op != "del") == "서라벌 밝은 달밤에"
    unrelated = diff_segments("서라벌 밝은 달에 밤 늦게 노닐다가", "Hello, how can I help you?")
    assert unrelated == [("equal", "Hello, how can I help you?")]


def test_report_escapes_what_models_and_datasets_wrote(tmp_path: Path) -> None:
    """Outputs, references and system names are text: markup in them is shown, not run."""
    from evals.data import Item
    from evals.report import report_html

    evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    summary = {
        "spec": "s<b>", "run_id": "r1", "finished": 0.0, "items": 1, "task": "translate",
        "bootstrap": {"resamples": 10}, "pairs": {}, "previous": None,
        "systems": {evil: {"metrics": {"chrf": {"score": 1.0, "ci": [0.5, 1.5]}}}},
    }  # fmt: skip
    rows = [{"system": evil, "id": "a", "output": evil + " 달", "metrics": {"chrf": 1.0}}]
    item = Item(id="a", source=evil, references=[evil + " 달"], meta={"title": evil})
    page = report_html(summary, rows, [item], [])
    assert "<script>" not in page and "<img" not in page and "s<b>" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
