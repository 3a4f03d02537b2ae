"""The eval pages' trend axes and item legend (evals/report.py, evals/templates/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.html import render
from evals.report import trend
from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.settings import load_settings


def flat(metric: str, value: float) -> list[dict]:
    return [{"systems": {"s": {metric: value}}} for _ in range(3)]


@pytest.mark.parametrize(
    ("metric", "value", "lo", "hi"),
    [("bleu", 0.0, 0, 10), ("chrf", 100.0, 90, 100), ("bleu", 42.5, 37.5, 47.5),
     ("bleu", 2.0, 0, 10), ("ter", 120.0, 115, 125), ("accuracy", 98.0, 90, 100)],
)  # fmt: skip
def test_a_flat_series_gets_an_axis_around_it_inside_the_metrics_range(
    metric: str, value: float, lo: float, hi: float
) -> None:
    chart = trend(flat(metric, value), metric)
    assert (chart["lo"], chart["hi"]) == (lo, hi)
    (series,) = chart["series"]
    assert all(chart["top"] <= y <= chart["bottom"] for _, y in series["points"])
    svg = render("history.html", specs=[{"name": "flat", "charts": [chart], "runs": []}])
    assert "-1.0" not in svg and f">{lo:.1f}<" in svg and f">{hi:.1f}<" in svg


def test_a_moving_series_keeps_its_own_range() -> None:
    runs = [{"systems": {"s": {"bleu": v}}} for v in (12.0, 30.0, 21.0)]
    chart = trend(runs, "bleu")
    assert (chart["lo"], chart["hi"]) == (12.0, 30.0)


def run_with(tmp: Path, output: str) -> str:
    """A one-item translation run whose system wrote `output`; its report page."""
    tmp.mkdir()
    data = tmp / "data.jsonl"
    item = {"id": "a", "source": "東京明期月良", "references": ["서라벌 밝은 달밤에"]}
    data.write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    outputs = tmp / "o.jsonl"
    outputs.write_text(json.dumps({"id": "a", "output": output}, ensure_ascii=False) + "\n")
    spec = tmp / "spec.yaml"
    spec.write_text(
        f"name: legend\ndataset: {data}\nsystems:\n  - {{name: s, outputs: {outputs}}}\n"
    )
    summary = run_spec(load_spec(spec), tmp / "runs", settings=load_settings(),
                       backend_factory=lambda s: None)  # fmt: skip
    return (tmp / "runs" / summary["run_id"] / "report.html").read_text(encoding="utf-8")


def test_the_diff_legend_shows_only_when_differences_are_marked(tmp_path: Path) -> None:
    close = run_with(tmp_path / "close", "서라벌 밝은 달에")
    assert 'id="diff-legend"' in close
    assert "<del>밤</del>" in close.split('id="items"')[1]
    unrelated = run_with(tmp_path / "unrelated", "Hello, how can I help you?")
    assert 'id="diff-legend"' not in unrelated and "<del>" not in unrelated
    assert "Each system's output and its scores" in unrelated
