"""Evals against a served model: wall time at 1, 4 and 8 calls in flight, against the ideal.

The Ollama-protocol test server (tests/ollama_server.py) in its scripted mode answers every
request after a fixed latency (250 ms) and serves many at once, as a served model with
parallel slots does. A 200-item translate eval runs at concurrency 1, 4 and 8; the ideal is
items x latency / concurrency. Also PAL with 8 samples on one question (the samples are
generated at once).

Floors (issue 12): at concurrency 8 within 1.25x of ideal, and at least 6x faster than 1.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.backends.gguf import default_gguf
from pipelines.settings import load_settings
from pipelines.toolkit import Toolkit
from tests.ollama_server import OllamaProtocolServer

ITEMS = 200
LATENCY = 0.25
MODEL = "smollm2:135m"
PROGRAM = "```python\ndef solution():\n    return 6 * 7\n```"


def reply(prompt: str) -> str:
    return PROGRAM if "solution()" in prompt else "서라벌 밝은 달밤에"


def eval_wall_time(server: OllamaProtocolServer, concurrency: int, work: Path) -> float:
    data = work / f"data-{concurrency}.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"i{k}", "source": f"原文 {k}", "references": ["서라벌 밝은 달"]})
            + "\n"
            for k in range(ITEMS)
        )
    )
    spec_path = work / f"spec-{concurrency}.yaml"
    spec_path.write_text(
        f"name: served{concurrency}\ndataset: {data}\nconcurrency: {concurrency}\n"
        "systems: [{name: a, prompt: hyangga/zero_shot}]\nmetrics: [chrf]\n"
    )
    settings = load_settings(
        {
            "backend": "ollama",
            "ollama_host": server.url,
            "ollama_model": MODEL,
            "cache_dir": work / f"cache-{concurrency}",  # every call goes to the server
        }
    )
    kit = Toolkit(settings)
    kit.backend().chat.get_num_tokens("warm up")  # calibration outside the timing
    started = time.perf_counter()
    summary = run_spec(
        load_spec(spec_path), work / "runs", settings=settings, backend_factory=kit.backend_for
    )
    elapsed = time.perf_counter() - started
    assert summary["systems"]["a"]["model_calls"] == ITEMS, summary["systems"]["a"]
    return elapsed


def pal_samples_wall_time(server: OllamaProtocolServer, work: Path, samples: int = 8) -> float:
    settings = load_settings(
        {"backend": "ollama", "ollama_host": server.url, "ollama_model": MODEL,
         "cache_dir": work / "cache-pal"}
    )  # fmt: skip
    with Toolkit(settings) as kit:
        pal = kit.pal(samples=samples)
        pal.invoke("What is 6 times 7?")  # warm: calibration, sandbox workers
        started = time.perf_counter()
        result = pal.invoke("What is 7 times 6?")
        elapsed = time.perf_counter() - started
    assert result.ok and result.answer == 42, result
    return elapsed


def main(out_dir: Path) -> dict[str, Any]:
    rows: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        OllamaProtocolServer({MODEL: default_gguf()}, scripted=reply, latency=LATENCY) as server,
    ):
        work = Path(tmp)
        for concurrency in (1, 4, 8):
            wall = eval_wall_time(server, concurrency, work)
            ideal = ITEMS * LATENCY / concurrency
            rows[f"eval, concurrency {concurrency}"] = {
                "wall_s": round(wall, 2),
                "ideal_s": round(ideal, 2),
                "vs_ideal": round(wall / ideal, 3),
            }
        pal_wall = pal_samples_wall_time(server, work)
    one = rows["eval, concurrency 1"]["wall_s"]
    for row in rows.values():
        row["speedup_vs_1"] = round(one / row["wall_s"], 2)
    eight = rows["eval, concurrency 8"]
    floors = {
        "c8_within_1.25x_of_ideal": eight["vs_ideal"] <= 1.25,
        "c8_at_least_6x_faster_than_c1": eight["speedup_vs_1"] >= 6,
    }
    doc = {
        "items": ITEMS,
        "latency_s": LATENCY,
        "rows": rows,
        "pal_8_samples_wall_s": round(pal_wall, 2),
        "pal_8_samples_ideal_s": LATENCY,
        "floors": floors,
    }
    (out_dir / "served.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"### Evals against a served model ({ITEMS} items, {LATENCY * 1000:.0f} ms per call)",
        "",
        "| run | wall s | ideal s | vs ideal | speed-up vs 1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wall_s']:.2f} | {r['ideal_s']:.2f} | {r['vs_ideal']:.2f}x "
            f"| {r['speedup_vs_1']:.2f}x |"
        )
    lines += [
        "",
        f"PAL, 8 samples of one question: {pal_wall:.2f} s (one call's latency: {LATENCY} s; "
        "the samples are generated at once, then their programs run).",
        "Floors: concurrency 8 within 1.25x of ideal: "
        f"{'met' if floors['c8_within_1.25x_of_ideal'] else 'NOT met'}; at least 6x faster "
        f"than concurrency 1: {'met' if floors['c8_at_least_6x_faster_than_c1'] else 'NOT met'}.",
        "",
    ]
    (out_dir / "served.md").write_text("\n".join(lines))
    return doc


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "served.md").read_text())
