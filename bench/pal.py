"""PAL: its own overhead, and accuracy of pal / cot / direct on the bundled problems.

Overhead: PAL's wall time divided by the time spent in the model calls plus the sandbox
runs it made (each measured at its call), on the embedded model. What is left over is
PAL's own work: prompt rendering, program extraction, retries bookkeeping, voting.
Floor (issue 4): <= 1.05.

Accuracy: the 44 bundled problems (12 Korean) with the embedded model, and with Ollama
too when a server with the configured model answers. The embedded model is a 135M
model; its accuracy is reported as it is.

LLAMAPIPE_BENCH_LIMIT=N runs only the first N problems (for a quick look).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from evals.data import PAL_PROBLEMS
from pipelines.backends import Backend
from pipelines.errors import LlamapipeError
from pipelines.pal import load_dataset, same_answer
from pipelines.sandbox import Sandbox
from pipelines.settings import load_settings
from pipelines.toolkit import Toolkit

MAX_TOKENS = 160


class TimedSandbox:
    """The sandbox, with the wall time of every run (as PAL sees it) added up."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.seconds = 0.0

    def run(self, code: str) -> Any:
        started = time.perf_counter()
        try:
            return self.sandbox.run(code)
        finally:
            self.seconds += time.perf_counter() - started


def overhead(kit: Toolkit, questions: list[str]) -> dict[str, Any]:
    timed = TimedSandbox(kit.sandbox())
    pal = kit.pal(retries=1).model_copy(update={"sandbox": timed})
    pal.invoke(questions[0])  # warm the model and the pool
    timed.seconds = 0.0
    generation = 0.0
    started = time.perf_counter()
    for q in questions:
        result = pal.invoke(q)
        generation += sum(a.generation_ms for a in result.attempts) / 1000
    wall = time.perf_counter() - started
    parts = generation + timed.seconds
    return {
        "questions": len(questions),
        "pal_wall_s": round(wall, 3),
        "model_s": round(generation, 3),
        "sandbox_s": round(timed.seconds, 3),
        "ratio": round(wall / parts, 4),
    }


def accuracy(kit: Toolkit, backend: Backend, items: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in ("pal", "cot", "direct"):
        correct = {"all": 0, "en": 0, "ko": 0}
        started = time.perf_counter()
        for item in items:
            runner = kit.pal(method=method, task=item.task or "math", retries=1, backend=backend)
            result = runner.invoke(item.question)
            if result.ok and same_answer(result.answer, item.answer):
                correct["all"] += 1
                correct[item.lang or "en"] += 1
        n_ko = sum(i.lang == "ko" for i in items)
        out[method] = {
            "accuracy": round(correct["all"] / len(items), 4),
            "correct": correct["all"],
            "total": len(items),
            "korean_correct": correct["ko"],
            "korean_total": n_ko,
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def main(out_dir: Path) -> dict[str, Any]:
    items = load_dataset(PAL_PROBLEMS)
    limit = int(os.environ.get("LLAMAPIPE_BENCH_LIMIT", "0") or 0)
    if limit:
        items = items[:limit]
    doc: dict[str, Any] = {"dataset": str(PAL_PROBLEMS.name), "problems": len(items)}
    with Toolkit(load_settings({"backend": "embedded", "max_tokens": MAX_TOKENS})) as kit:
        embedded = kit.backend()
        doc["overhead"] = overhead(kit, [i.question for i in items[:10]])
        doc["accuracy"] = {"embedded": {"model": embedded.model, **accuracy(kit, embedded, items)}}
        try:
            ollama = kit.backend_for(load_settings({"backend": "ollama", "max_tokens": MAX_TOKENS}))
            doc["accuracy"]["ollama"] = {"model": ollama.model, **accuracy(kit, ollama, items)}
        except LlamapipeError as exc:
            doc["accuracy"]["ollama"] = {"skipped": exc.message}
    (out_dir / "pal.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "pal.md").write_text(_markdown(doc))
    return doc


def _markdown(doc: dict[str, Any]) -> str:
    o = doc["overhead"]
    lines = [
        "### PAL: overhead and accuracy",
        "",
        f"Overhead on the embedded model ({o['questions']} questions): "
        f"PAL wall {o['pal_wall_s']} s "
        f"/ (model {o['model_s']} s + sandbox {o['sandbox_s']} s) = **{o['ratio']:.3f}** "
        f"(floor <= 1.05: {'met' if o['ratio'] <= 1.05 else 'NOT met'}).",
        "",
        "| backend | model | method | correct | accuracy | Korean | vs direct |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, acc in doc["accuracy"].items():
        if "skipped" in acc:
            lines.append(f"| {name} | - | - | - | skipped: {acc['skipped']} | - | - |")
            continue
        base = acc["direct"]["accuracy"] or None
        for method in ("pal", "cot", "direct"):
            m = acc[method]
            ratio = f"{m['accuracy'] / base:.2f}x" if base else "n/a"
            lines.append(
                f"| {name} | {acc['model']} | {method} | {m['correct']}/{m['total']} | "
                f"{m['accuracy']:.1%} | {m['korean_correct']}/{m['korean_total']} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "pal.md").read_text())
