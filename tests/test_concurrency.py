"""Evals keep a served model busy: calls in flight at once, bounded, and runs that still
resume exactly. Against the Ollama-protocol test server in its scripted mode (a fixed
latency, many requests at once, no model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evals.runner import read_results, run_spec
from evals.spec import load_spec
from pipelines.pool import bounded
from pipelines.settings import load_settings
from tests.conftest import TEST_MODEL
from tests.fakes import ScriptedChat
from tests.ollama_server import OllamaProtocolServer

ROOT = Path(__file__).resolve().parents[1]


def dataset(folder: Path, n: int) -> Path:
    rows = [
        {"id": f"i{k:03d}", "source": f"原文 {k}", "references": [f"번역 {k}"]} for k in range(n)
    ]
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def spec(folder: Path, n: int, extra: str = "") -> Path:
    data = dataset(folder, n)
    path = folder / "spec.yaml"
    path.write_text(
        f"name: busy\ndataset: {data}\nsystems: [{{name: a, prompt: hyangga/zero_shot}}]\n"
        f"metrics: [chrf]\n{extra}",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def server(gguf_path: Path) -> Iterator[OllamaProtocolServer]:
    with OllamaProtocolServer(
        {TEST_MODEL: gguf_path}, scripted=lambda prompt: "번역", latency=0.3
    ) as s:
        yield s


def settings_for(server: OllamaProtocolServer, **extra: Any) -> Any:
    return load_settings(
        {"backend": "ollama", "ollama_host": server.url, "ollama_model": TEST_MODEL, **extra}
    )


def ollama_factory(settings: Any) -> Any:
    from pipelines.backends import load_backend

    return load_backend(settings)


# -- the pool ------------------------------------------------------------------------------------


def test_bounded_never_runs_more_than_asked_and_yields_everything() -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return n * n

    flights: list[int] = []
    out = dict(bounded(work, range(40), 5, on_flight=flights.append))
    assert out == {n: n * n for n in range(40)}
    assert most[0] == 5 and max(flights) == 5 and flights[-1] == 0


def test_bounded_raises_the_first_error_and_starts_nothing_after_it() -> None:
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        if n == 3:
            raise ValueError("item 3")
        time.sleep(0.01)
        return n

    with pytest.raises(ValueError, match="item 3"):
        list(bounded(work, range(100), 4))
    assert len(started) < 20, "no queue of hundreds behind the failure"


# -- eval runs against a served model -------------------------------------------------------------


@pytest.mark.ollama
@pytest.mark.parametrize("workers, expected", [(1, 1), (8, 8)])
def test_eval_keeps_the_asked_number_of_calls_in_flight(
    tmp_path: Path, server: OllamaProtocolServer, workers: int, expected: int
) -> None:
    steps: list[int] = []
    summary = run_spec(
        load_spec(spec(tmp_path, 24, f"concurrency: {workers}\n")),
        tmp_path / "runs",
        settings=settings_for(server),
        backend_factory=ollama_factory,
        on_step=lambda p: steps.append(p.in_flight),
    )
    assert server.most_in_flight == expected
    assert max(steps) == expected
    rows = read_results(tmp_path / "runs" / summary["run_id"] / "results.jsonl")
    assert sorted(r["id"] for r in rows) == [f"i{k:03d}" for k in range(24)]
    assert summary["systems"]["a"]["model_calls"] == 24


@pytest.mark.ollama
def test_served_backends_default_to_four_at_once(
    tmp_path: Path, server: OllamaProtocolServer
) -> None:
    run_spec(
        load_spec(spec(tmp_path, 12)),
        tmp_path / "runs",
        settings=settings_for(server),
        backend_factory=ollama_factory,
    )
    assert server.most_in_flight == 4


def test_an_error_in_one_call_stops_the_run_and_it_resumes_exactly(tmp_path: Path) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def reply(prompt: str) -> str:
        with lock:
            calls.append(prompt)
            if len(calls) == 10:
                raise KeyboardInterrupt  # as if Ctrl-C landed during the tenth call
        time.sleep(0.01)
        return "번역"

    model = ScriptedChat(reply)
    factory = lambda settings: SimpleNamespace(name="fake", model="scripted", chat=model)  # noqa: E731
    path = spec(tmp_path, 30, "concurrency: 4\n")
    with pytest.raises(KeyboardInterrupt):
        run_spec(load_spec(path), tmp_path / "runs", settings=load_settings(),
                 backend_factory=factory)  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
    kept = len(read_results(run_dir / "results.jsonl"))
    assert 0 < kept < 30
    summary = run_spec(load_spec(path), tmp_path / "runs", settings=load_settings(),
                       backend_factory=factory)  # fmt: skip
    rows = read_results(run_dir / "results.jsonl")
    keys = [r["id"] for r in rows]
    assert len(keys) == len(set(keys)) == 30, "none lost, none repeated"
    assert summary["systems"]["a"]["resumed"] == kept


@pytest.mark.ollama
@pytest.mark.slow
def test_kill_9_with_calls_in_flight_then_resume(
    tmp_path: Path, server: OllamaProtocolServer
) -> None:
    path = spec(tmp_path, 40, "concurrency: 8\n")
    out = tmp_path / "runs"
    env = {
        **os.environ,
        "LLAMAPIPE_BACKEND": "ollama",
        "OLLAMA_HOST": server.url,
        "LLAMAPIPE_OLLAMA_MODEL": TEST_MODEL,
    }
    cmd = [sys.executable, "-m", "cli", "eval", "run", str(path), "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    results = None
    while time.time() < deadline:
        found = list(out.glob("*/results.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 10:
            results = found[0]
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # with up to 8 calls in flight
    proc.wait()
    assert results is not None, "the run never got going"
    before = len(read_results(results))
    assert before < 40
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    keys = [r["id"] for r in read_results(results)]
    assert len(keys) == len(set(keys)) == 40, "none lost, none repeated"
    assert summary["systems"]["a"]["resumed"] == before


# -- failing items ---------------------------------------------------------------------------------


def flaky(failing: set[str]) -> ScriptedChat:
    """A model whose calls fail (after the backend's own retries) for the given sources."""
    from pipelines.errors import OllamaResponseError

    def reply(prompt: str) -> str:
        for source in failing:
            if source in prompt:
                raise OllamaResponseError("Ollama at h answered 503: busy", hint="later")
        return "번역"

    return ScriptedChat(reply)


def factory_of(model: ScriptedChat) -> Any:
    return lambda settings: SimpleNamespace(name="fake", model="scripted", chat=model)


def test_a_failing_item_does_not_sink_the_run_and_is_asked_again(tmp_path: Path) -> None:
    from evals.runs import ItemsFailed

    path = spec(tmp_path, 12)
    bad = {"原文 3", "原文 7"}  # two items (of 0-11, so no other holds these), not in a row
    with pytest.raises(ItemsFailed, match="2 of 12 model calls failed") as info:
        run_spec(load_spec(path), tmp_path / "runs", settings=load_settings(),
                 backend_factory=factory_of(flaky(bad)))  # fmt: skip
    assert "again" in (info.value.hint or "")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(read_results(run_dir / "results.jsonl")) == 10, "every other item is kept"
    errors = [json.loads(line) for line in (run_dir / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["i003", "i007"] and "503" in errors[0]["error"]
    healthy = flaky(set())
    summary = run_spec(load_spec(path), tmp_path / "runs", settings=load_settings(),
                       backend_factory=factory_of(healthy))  # fmt: skip
    assert len(healthy.calls) == 2, "only the failed items were asked again"
    assert summary["systems"]["a"]["resumed"] == 10
    assert len(read_results(run_dir / "results.jsonl")) == 12


def test_a_server_gone_stops_the_run_after_a_few_failures(tmp_path: Path) -> None:
    from evals.runs import ItemsFailed

    model = flaky({"原文"})  # every call fails
    with pytest.raises(ItemsFailed, match="3 model calls in a row failed"):
        run_spec(load_spec(spec(tmp_path, 30)), tmp_path / "runs", settings=load_settings(),
                 backend_factory=factory_of(model))  # fmt: skip
    assert len(model.calls) == 3, "it stopped instead of failing all 30"


# -- PAL: a dataset, and the Runnable's batch ----------------------------------------------------

PROGRAM = "```python\ndef solution():\n    return 6 * 7\n```"


@pytest.mark.ollama
def test_pal_run_solves_problems_at_once_and_reports_in_order(
    tmp_path: Path,
    gguf_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.cli_helpers import run_cli

    data = tmp_path / "p.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"q{k}", "question": f"{k}?", "answer": 42}) + "\n"
                for k in range(12))
    )  # fmt: skip
    with OllamaProtocolServer(
        {TEST_MODEL: gguf_path}, scripted=lambda prompt: PROGRAM, latency=0.2
    ) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        r = run_cli(capsys, "pal", "run", str(data), "-j", "4", "--backend", "ollama",
                    "--model", TEST_MODEL, "--json")  # fmt: skip
        assert r.code == 0, r.stderr
        assert server.most_in_flight == 4
    doc = r.json()
    assert doc["correct"] == 12 and [i["id"] for i in doc["items"]] == [f"q{k}" for k in range(12)]


@pytest.mark.ollama
def test_pal_batch_honours_max_concurrency(gguf_path: Path) -> None:
    from pipelines.backends import load_backend
    from pipelines.pal import PAL
    from pipelines.sandbox import Sandbox

    with (
        OllamaProtocolServer(
            {TEST_MODEL: gguf_path}, scripted=lambda prompt: PROGRAM, latency=0.2
        ) as server,
        Sandbox(isolation="unsafe") as sandbox,
    ):
        chat = load_backend(settings_for(server)).chat
        pal = PAL(model=chat, sandbox=sandbox)
        results = pal.batch([f"q{k}?" for k in range(9)], config={"max_concurrency": 3})
        assert server.most_in_flight == 3
    assert [r.answer for r in results] == [42] * 9


@pytest.mark.ollama
def test_rag_batch_honours_max_concurrency(tmp_path: Path, gguf_path: Path) -> None:
    from pipelines.backends import load_backend
    from pipelines.rag import RAG, Index

    index = Index(tmp_path / "index")
    index.ingest([ROOT / "evals" / "datasets" / "rag" / "corpus"])
    answer = "Ogura Shinpei published a reading of the hyangga in 1929 [1]."
    questions = ["Who published a reading of the hyangga in 1929?", "처용가는 누가 지었나요?"] * 3
    with OllamaProtocolServer(
        {TEST_MODEL: gguf_path}, scripted=lambda prompt: answer, latency=0.2
    ) as server:
        rag = RAG(model=load_backend(settings_for(server)).chat, index=index, k=3)
        results = rag.batch(questions, config={"max_concurrency": 3})
        assert server.most_in_flight == 3
    assert [r.question for r in results] == questions
    assert all(r.citations for r in results[::2]), "each answer checked on its own"


@pytest.mark.ollama
async def test_pal_and_rag_abatch_honour_max_concurrency(tmp_path: Path, gguf_path: Path) -> None:
    from pipelines.backends import load_backend
    from pipelines.pal import PAL
    from pipelines.rag import RAG, Index
    from pipelines.sandbox import Sandbox

    index = Index(tmp_path / "index")
    index.ingest([ROOT / "evals" / "datasets" / "rag" / "corpus"])
    with (
        OllamaProtocolServer(
            {TEST_MODEL: gguf_path}, scripted=lambda prompt: PROGRAM, latency=0.2
        ) as server,
        Sandbox(isolation="unsafe") as sandbox,
    ):
        chat = load_backend(settings_for(server)).chat
        solved = await PAL(model=chat, sandbox=sandbox).abatch(
            [f"q{k}?" for k in range(8)], config={"max_concurrency": 4}
        )
        assert server.most_in_flight == 4
        server.most_in_flight = 0
        answers = await RAG(model=chat, index=index, k=3).abatch(
            ["처용가는 누가 지었나요?"] * 6, config={"max_concurrency": 2}
        )
        assert server.most_in_flight == 2
    assert [r.answer for r in solved] == [42] * 8
    assert len(answers) == 6
