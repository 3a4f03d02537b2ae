"""Reports: `report.md` for terminals and reviews, `report.html` self-contained (inline CSS
and SVG, nothing fetched), and the history page `index.html` with a trend per metric."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evals.data import Item
from evals.history import load_history
from evals.html import render

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- markdown ---------------------------------------------------------------------------------


def _counts(summary: dict[str, Any]) -> dict[str, str]:
    """Where the outputs came from: summary key -> column title (resumed only when any)."""
    counts = {"model_calls": "model calls", "cached": "cached"}
    for key, title in (("given", "given outputs"), ("resumed", "resumed")):
        if any(info.get(key) for info in summary["systems"].values()):
            counts[key] = title
    return counts


def markdown(summary: dict[str, Any]) -> str:
    metrics = list(next(iter(summary["systems"].values()))["metrics"])
    tokenizer = f", BLEU tokenizer `{summary['tokenize']}`" if summary.get("tokenize") else ""
    counts = _counts(summary)
    lines = [
        f"# {summary['spec']} — run {summary['run_id']}",
        "",
        f"{summary['items']} items, task `{summary['task']}`{tokenizer}, "
        f"95% intervals from {summary['bootstrap']['resamples']} paired bootstrap resamples"
        + (f" by `{summary['group_by']}`" if summary.get("group_by") else "")
        + ".",
        "",
        "| system | " + " | ".join([*metrics, *counts.values()]) + " |",
        "|---|" + "---:|" * (len(metrics) + len(counts)),
    ]
    for name, info in summary["systems"].items():
        cells = []
        for m in metrics:
            v = info["metrics"][m]
            ci = v.get("ci")
            cells.append(_fmt(v["score"]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""))
        cells += [str(info.get(key, 0)) for key in counts]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary.get("judge"):
        lines += ["", judge_note(summary["judge"])]
    for metric in summary.get("unscored") or []:
        lines += ["", f"Not scored: `{metric}`: no item holds what it needs (for answer "
                  "correctness, references: `answers` or `reference`)."]  # fmt: skip
    first = next(iter(summary["systems"].values()))["metrics"]
    signed = [m for m in metrics if first[m].get("signature")]
    if signed:
        lines += ["", "## Signatures", ""]
        lines += [f"- {m}: `{first[m]['signature']}`" for m in signed]
    if any(summary["pairs"].values()):
        lines += [
            "",
            "## Between systems",
            "",
            "| metric | a | b | a − b | 95% CI | p | significant |",
            "|---|---|---|---:|---|---:|---|",
        ]
        for metric, pairs in summary["pairs"].items():
            for p in pairs:
                lines.append(
                    f"| {metric} | {p['a']} | {p['b']} | {_fmt(p['diff'])} | "
                    f"[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}] | {p['p']:.3f} | {'yes' if p['significant'] else 'no'} |"
                )
    lines += _ran_lines(summary) + _previous_lines(summary.get("previous"))
    return "\n".join(lines) + "\n"


def _ran_lines(summary: dict[str, Any]) -> list[str]:
    """What each system ran: backend, model and its pin, prompt and its hash, params."""
    from evals.identity import label

    lines = ["", "## What ran", "", "| system | ran | prompt | params |", "|---|---|---|---|"]
    for name, info in summary["systems"].items():
        ran = info.get("ran") or {}
        prompt = ran.get("prompt") or {}
        shown = f"`{prompt['name']}` #{prompt['sha256']}" if prompt else ""
        lines.append(f"| {name} | {label(ran)} | {shown} | {_params(ran)} |")
    return lines


def judge_note(judge: dict[str, Any]) -> str:
    """The judge's score is labelled: a model's opinion, which model, and that it is opt-in."""
    who = f"{judge.get('backend') or 'the default backend'} {judge.get('model') or ''}".strip()
    return (f"`judged_correctness` is the verdict of a judge model ({who}), asked whether each "
            "answer says what the reference says: a model's opinion, not a measurement; it is "
            "scored only because the spec sets `judge:`.")  # fmt: skip


def _params(ran: dict[str, Any]) -> str:
    """The sampling parameters and task options that were set, as `temperature 0, k 3`."""
    both = {**ran.get("params", {}), **ran.get("options", {})}
    return ", ".join(f"{k} {v}" for k, v in both.items() if v not in (None, []))


def _previous_lines(prev: dict[str, Any] | None) -> list[str]:
    lines = ["", "## Against the previous run", ""]
    if not prev:
        return [*lines, "This is the first run of this spec."]
    lines += [f"Previous run: `{prev['run_id']}`.", ""]
    changed = prev.get("changed") or {}
    for system, notes in changed.items():
        lines.append(f"- **{system} changed since then**, so a change in its scores may be "
                     f"that: {'; '.join(notes)}.")  # fmt: skip
    lines += [
        *([""] if changed else []),
        "| system | metric | before | now | change | 95% CI | regressed |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for system, per in prev["systems"].items():
        mark = " (ran differently)" if system in changed else ""
        for metric, c in per.items():
            lines.append(
                f"| {system} | {metric} | {_fmt(c['previous'])} | {_fmt(c['current'])} | {c['diff']:+.2f} | "
                f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}] | {('**yes**' if c['regressed'] else 'no') + mark} |"
            )
    return lines


# -- html --------------------------------------------------------------------------------------
# The pages are templates/report.html and templates/history.html; this builds their data.


MIN_DIFF_SIMILARITY = 0.2  # below this, marking differences is all noise


def diff_segments(reference: str, output: str) -> list[tuple[str, str]]:
    """The output as ("equal" | "del" | "ins", text) pieces against the reference
    (characters, for Korean); the template marks "del" and "ins".

    An output that shares almost nothing with the reference is one "equal" piece: striking
    through the whole reference says nothing the scores do not.
    """
    squeezed = difflib.SequenceMatcher(None, "".join(reference.split()), "".join(output.split()))
    if squeezed.ratio() < MIN_DIFF_SIMILARITY:  # (spaces alone make texts look alike)
        return [("equal", output)]
    pieces: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(None, reference, output, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(("equal", output[b0:b1]))
            continue
        if a1 > a0:
            pieces.append(("del", reference[a0:a1]))
        if b1 > b0:
            pieces.append(("ins", output[b0:b1]))
    return pieces


SCALE = (0.0, 100.0)  # every metric scores 0 to 100 ...
ABOVE_SCALE = frozenset({"ter"})  # ... but TER, an edit rate, which can pass 100
FLAT_PAD = 5.0  # a flat series is drawn in the middle of an axis this far either side


def axis(values: list[float], metric: str) -> tuple[float, float]:
    """The y axis of a trend: the values' range; for a flat series, room around its value
    that stays inside what the metric can score (never a BLEU axis from -1)."""
    if not values:
        return SCALE
    lo, hi = min(values), max(values)
    if hi - lo >= 1e-9:
        return lo, hi
    lo, hi = lo - FLAT_PAD, hi + FLAT_PAD
    if lo < SCALE[0]:
        lo, hi = SCALE[0], SCALE[0] + 2 * FLAT_PAD
    elif hi > SCALE[1] and metric not in ABOVE_SCALE:
        lo, hi = SCALE[1] - 2 * FLAT_PAD, SCALE[1]
    return lo, hi


def trend(runs: list[dict[str, Any]], metric: str, width: int = 360, height: int = 180) -> dict:
    """A trend chart's geometry: a series of points per system across runs (oldest left)."""
    systems = sorted({s for r in runs for s in r["systems"] if metric in r["systems"][s]})
    values = [
        r["systems"][s][metric] for r in runs for s in systems if metric in r["systems"].get(s, {})
    ]
    left, right, top, bottom = 40, width - 10, 24, height - 28
    lo, hi = axis(values, metric)
    n = max(len(runs), 2)

    def y(v: float) -> float:
        return top + (bottom - top) * (1 - (v - lo) / (hi - lo))

    series = [
        {
            "system": system,
            "colour": COLOURS[k % len(COLOURS)],
            "points": [
                (left + (right - left) * i / (n - 1), y(r["systems"][system][metric]))
                for i, r in enumerate(runs)
                if metric in r["systems"].get(system, {})
            ],
        }
        for k, system in enumerate(systems)
    ]
    return {
        "metric": metric, "width": width, "height": height, "left": left, "right": right,
        "top": top, "bottom": bottom, "lo": lo, "hi": hi, "y_lo": y(lo), "y_hi": y(hi),
        "runs": len(runs), "series": series,
    }  # fmt: skip


def report_html(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    items: list[Item],
    runs: list[dict[str, Any]],
) -> str:
    metrics = list(next(iter(summary["systems"].values()))["metrics"])
    systems = list(summary["systems"])
    by_key = {(r["system"], r["id"]): r for r in rows}

    def scores(row: dict[str, Any]) -> str:
        return " · ".join(f"{m} {_fmt(v)}" for m, v in row["metrics"].items() if v is not None)

    translations: list[dict[str, Any]] = [
        {
            "title": str(item.meta.get("title") or item.id),
            "source": item.source,
            "references": item.references,
            "cells": [
                {"diff": diff_segments(item.references[0], row["output"]), "scores": scores(row)}
                if (row := by_key.get((s, item.id)))
                else None
                for s in systems
            ],
        }
        for item in items
    ]
    answers = []
    if not items:  # PAL and RAG: the question, what was expected, each system's answer
        for item_id in dict.fromkeys(r["id"] for r in rows):
            first = next(r for r in rows if r["id"] == item_id)
            expected = first.get("expected")
            shown = ", ".join(map(str, expected)) if isinstance(expected, list) else expected
            answers.append(
                {
                    "id": str(item_id),
                    "input": str(first.get("input", "")),
                    "expected": "" if shown is None else str(shown),
                    "cells": [
                        {"output": _output_text(row.get("output")), "scores": scores(row)}
                        if (row := by_key.get((s, item_id)))
                        else None
                        for s in systems
                    ],
                }
            )
    marked = any(
        op != "equal" for t in translations for c in t["cells"] if c for op, _ in c["diff"]
    )
    return render(
        "report.html",
        s=summary,
        finished=_when(summary["finished"]),
        metrics=metrics,
        counts=_counts(summary),
        ran=_ran_rows(summary),
        judge=judge_note(summary["judge"]) if summary.get("judge") else "",
        charts=[trend(runs, m) for m in metrics] if len(runs) > 1 else [],
        pairs=any(summary["pairs"].values()),
        translations=translations,
        marked=marked,  # the legend for <del> and <ins>, only when some are drawn
        answers=answers,
        fmt=_fmt,
    )


def _ran_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    from evals.identity import label

    rows = []
    for name, info in summary["systems"].items():
        ran = info.get("ran") or {}
        prompt = ran.get("prompt") or {}
        rows.append({
            "system": name, "ran": label(ran),
            "prompt": f"{prompt['name']} #{prompt['sha256']}" if prompt else "",
            "params": _params(ran),
        })  # fmt: skip
    return rows


def _output_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def write_reports(
    run_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], items: list[Item]
) -> None:
    runs = load_history(run_dir.parent, summary["spec"])
    (run_dir / "report.md").write_text(markdown(summary), encoding="utf-8")
    (run_dir / "report.html").write_text(report_html(summary, rows, items, runs), encoding="utf-8")
    write_index(run_dir.parent)


def history_specs(out: Path, link: Callable[[str], str]) -> list[dict[str, Any]]:
    """Each spec's trend charts and its runs (newest first), for templates/history.html;
    `link(run_id)` is where a run's report is (a file beside it, or the web app's URL)."""
    from evals.identity import label

    history = load_history(out)
    specs = []
    for spec in sorted({r["spec"] for r in history}):
        runs = [r for r in history if r["spec"] == spec]
        metrics = sorted({m for r in runs for s in r["systems"].values() for m in s})
        specs.append(
            {
                "name": spec,
                "charts": [trend(runs, m) for m in metrics] if len(runs) > 1 else [],
                "runs": [
                    {
                        "run_id": r["run_id"],
                        "link": link(r["run_id"]),
                        "finished": _when(r["finished"]),
                        "ran": "; ".join(
                            f"{s}: {label(ran)}" for s, ran in (r.get("ran") or {}).items()
                        ),
                        "scores": "; ".join(
                            f"{s}: " + ", ".join(f"{m} {_fmt(v)}" for m, v in ms.items())
                            for s, ms in r["systems"].items()
                        ),
                    }
                    for r in reversed(runs)
                ],
            }
        )
    return specs


def write_index(out: Path) -> Path:
    """`<out>/index.html`: every spec's trend per metric, and its runs with links."""
    path = out / "index.html"
    specs = history_specs(out, lambda run_id: f"{quote(run_id)}/report.html")
    path.write_text(render("history.html", specs=specs), encoding="utf-8")
    return path
