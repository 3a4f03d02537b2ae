"""Reports: `report.md` for terminals and reviews, `report.html` self-contained (inline CSS
and SVG, nothing fetched), and the history page `index.html` with a trend per metric."""

from __future__ import annotations

import difflib
import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.data import Item
from evals.history import load_history

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]
CSS = """
body{font-family:system-ui,-apple-system,"Noto Sans KR","Malgun Gothic",sans-serif;margin:2rem;
color:#111;max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.35rem .6rem;vertical-align:top;text-align:left}
th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#6b7280;font-size:.8rem}.sig{font-weight:600}.bad{color:#b91c1c}.good{color:#15803d}
pre{white-space:pre-wrap;margin:0;font-family:inherit}
ins{background:#dcfce7;text-decoration:none}del{background:#fee2e2}
.chart{border:1px solid #e5e7eb;margin:.5rem 1rem .5rem 0;display:inline-block}
.muted{color:#6b7280}
"""


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- markdown ---------------------------------------------------------------------------------


def _counts(summary: dict[str, Any]) -> dict[str, str]:
    """Where the outputs came from: summary key -> column title (resumed only when any)."""
    counts = {"model_calls": "model calls", "cached": "cached"}
    if any(info.get("resumed") for info in summary["systems"].values()):
        counts["resumed"] = "resumed"
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
    prev = summary.get("previous")
    lines += ["", "## Against the previous run", ""]
    if not prev:
        lines.append("This is the first run of this spec.")
    else:
        lines += [
            f"Previous run: `{prev['run_id']}`.",
            "",
            "| system | metric | before | now | change | 95% CI | regressed |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for system, per in prev["systems"].items():
            for metric, c in per.items():
                lines.append(
                    f"| {system} | {metric} | {_fmt(c['previous'])} | {_fmt(c['current'])} | {c['diff']:+.2f} | "
                    f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}] | {'**yes**' if c['regressed'] else 'no'} |"
                )
    return "\n".join(lines) + "\n"


# -- html --------------------------------------------------------------------------------------


MIN_DIFF_SIMILARITY = 0.2  # below this, marking differences is all noise


def diff_html(reference: str, output: str) -> str:
    """The output with what differs from the reference marked (characters, for Korean).

    An output that shares almost nothing with the reference is shown as it is: striking
    through the whole reference says nothing the scores do not.
    """
    parts = []
    matcher = difflib.SequenceMatcher(None, reference, output, autojunk=False)
    squeezed = difflib.SequenceMatcher(None, "".join(reference.split()), "".join(output.split()))
    if squeezed.ratio() < MIN_DIFF_SIMILARITY:  # (spaces alone make texts look alike)
        return html.escape(output)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            parts.append(html.escape(output[b0:b1]))
        else:
            if a1 > a0:
                parts.append(f"<del>{html.escape(reference[a0:a1])}</del>")
            if b1 > b0:
                parts.append(f"<ins>{html.escape(output[b0:b1])}</ins>")
    return "".join(parts)


def trend_svg(runs: list[dict[str, Any]], metric: str, width: int = 360, height: int = 180) -> str:
    """A line per system across runs (oldest left), as inline SVG."""
    systems = sorted({s for r in runs for s in r["systems"] if metric in r["systems"][s]})
    values = [
        r["systems"][s][metric] for r in runs for s in systems if metric in r["systems"].get(s, {})
    ]
    pad_l, pad_r, pad_t, pad_b = 40, 10, 24, 28
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    n = max(len(runs), 2)

    def x(i: int) -> float:
        return pad_l + (width - pad_l - pad_r) * i / (n - 1)

    def y(v: float) -> float:
        return pad_t + (height - pad_t - pad_b) * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg class="chart" role="img" aria-label="{html.escape(metric)} trend" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{pad_l}" y="15" font-size="12" font-weight="600">{html.escape(metric)}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#9ca3af"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#9ca3af"/>',
        f'<text x="{pad_l - 4}" y="{y(hi) + 4}" font-size="10" text-anchor="end">{hi:.1f}</text>',
        f'<text x="{pad_l - 4}" y="{y(lo) + 4}" font-size="10" text-anchor="end">{lo:.1f}</text>',
        f'<text x="{pad_l}" y="{height - 8}" font-size="10">run 1</text>',
        f'<text x="{width - pad_r}" y="{height - 8}" font-size="10" text-anchor="end">run {len(runs)}</text>',
    ]
    for k, system in enumerate(systems):
        colour = COLOURS[k % len(COLOURS)]
        points = [
            (x(i), y(r["systems"][system][metric]))
            for i, r in enumerate(runs)
            if metric in r["systems"].get(system, {})
        ]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(
                f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
            )
        for px, py in points:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>')
        out.append(
            f'<text x="{width - pad_r}" y="{pad_t + 12 * k}" font-size="10" fill="{colour}" '
            f'text-anchor="end">{html.escape(system)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def report_html(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    items: list[Item],
    runs: list[dict[str, Any]],
) -> str:
    metrics = list(next(iter(summary["systems"].values()))["metrics"])
    systems = list(summary["systems"])
    counts = _counts(summary)
    tokenizer = (
        f" · BLEU tokenizer <code>{html.escape(summary['tokenize'])}</code>"
        if summary.get("tokenize")
        else ""
    )
    b = [
        f"<h1>{html.escape(summary['spec'])}</h1>",
        f'<p class="muted">run {html.escape(summary["run_id"])} · {_when(summary["finished"])} · '
        f"{summary['items']} items · task <code>{html.escape(summary['task'])}</code>{tokenizer} · "
        f"95% intervals: {summary['bootstrap']['resamples']} paired bootstrap resamples</p>",
        '<h2>Scores</h2><table id="scores"><tr><th>system</th>',
    ]
    b += [f"<th>{html.escape(m)}</th>" for m in metrics]
    b += [f"<th>{title}</th>" for title in counts.values()] + ["</tr>"]
    for name in systems:
        info = summary["systems"][name]
        b.append(f"<tr><td>{html.escape(name)}</td>")
        for m in metrics:
            v = info["metrics"][m]
            ci = v.get("ci")
            b.append(
                f'<td class="num">{_fmt(v["score"])}'
                + (f'<br><span class="ci">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>' if ci else "")
                + "</td>"
            )
        b += [f'<td class="num">{info.get(key, 0)}</td>' for key in counts] + ["</tr>"]
    b.append("</table>")
    b.append("<h2>Trend across runs</h2>")
    if len(runs) > 1:
        b.append('<div id="trends">')
        b += [trend_svg(runs, m) for m in metrics]
        b.append("</div>")
    else:
        b.append('<p class="muted">The first run of this spec: trends appear from the second.</p>')
    prev = summary.get("previous")
    b.append("<h2>Against the previous run</h2>")
    if not prev:
        b.append("<p>This is the first run of this spec.</p>")
    else:
        b.append(
            f'<p>Previous run: <code>{html.escape(prev["run_id"])}</code></p><table id="previous">'
            "<tr><th>system</th><th>metric</th><th>before</th><th>now</th><th>change</th><th>95% CI</th></tr>"
        )
        for system, per in prev["systems"].items():
            for metric, c in per.items():
                cls = "bad sig" if c["regressed"] else ("good sig" if c["significant"] else "")
                b.append(
                    f"<tr><td>{html.escape(system)}</td><td>{metric}</td><td class=num>{_fmt(c['previous'])}</td>"
                    f"<td class=num>{_fmt(c['current'])}</td><td class='num {cls}'>{c['diff']:+.2f}</td>"
                    f"<td>[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}]</td></tr>"
                )
        b.append("</table>")
    if any(summary["pairs"].values()):
        b.append(
            '<h2>Between systems</h2><table id="pairs"><tr><th>metric</th><th>a</th><th>b</th>'
            "<th>a − b</th><th>95% CI</th><th>p</th></tr>"
        )
        for metric, pairs in summary["pairs"].items():
            for p in pairs:
                cls = "sig" if p["significant"] else ""
                b.append(
                    f"<tr><td>{metric}</td><td>{html.escape(p['a'])}</td><td>{html.escape(p['b'])}</td>"
                    f"<td class='num {cls}'>{p['diff']:+.2f}</td><td>[{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}]</td>"
                    f"<td class=num>{p['p']:.3f}</td></tr>"
                )
        b.append("</table>")
    b += _items_table(items, rows, systems) if items else _answers_table(rows, systems)
    return _page(f"{summary['spec']} {summary['run_id']}", "".join(b))


def _answers_table(rows: list[dict[str, Any]], systems: list[str]) -> list[str]:
    """PAL and RAG items: the question, what was expected, each system's answer and scores."""
    by_key = {(r["system"], r["id"]): r for r in rows}
    ids = list(dict.fromkeys(r["id"] for r in rows))
    b = [
        '<h2>Items</h2><p class="muted">Each system\'s answer and its scores for the item.</p>'
        '<table id="items"><tr><th>item</th><th>expected</th>'
    ]
    b += [f"<th>{html.escape(s)}</th>" for s in systems] + ["</tr>"]
    for item_id in ids:
        first = next(r for r in rows if r["id"] == item_id)
        expected = first.get("expected")
        shown = ", ".join(map(str, expected)) if isinstance(expected, list) else expected
        b.append(
            f"<tr><td><b>{html.escape(str(item_id))}</b>"
            f"<pre>{html.escape(str(first.get('input', '')))}</pre></td>"
            f"<td><pre>{html.escape('' if shown is None else str(shown))}</pre></td>"
        )
        for s in systems:
            row = by_key.get((s, item_id))
            if row is None:
                b.append("<td></td>")
                continue
            scores = " · ".join(f"{m} {_fmt(v)}" for m, v in row["metrics"].items())
            output = row.get("output")
            text = json.dumps(output, ensure_ascii=False) if not isinstance(output, str) else output
            b.append(f'<td><pre>{html.escape(text)}</pre><span class="ci">{scores}</span></td>')
        b.append("</tr>")
    b.append("</table>")
    return b


def _items_table(items: list[Item], rows: list[dict[str, Any]], systems: list[str]) -> list[str]:
    """Translation items: each output with what differs from the first reference marked."""
    by_key = {(r["system"], r["id"]): r for r in rows}
    b = []
    b.append(
        '<h2>Items</h2><p class="muted">Outputs with what differs from the first reference: '
        '<del>missing</del> <ins>added</ins>.</p><table id="items"><tr><th>source</th><th>references</th>'
    )
    b += [f"<th>{html.escape(s)}</th>" for s in systems] + ["</tr>"]
    for item in items:
        refs = "<hr>".join(f"<pre>{html.escape(r)}</pre>" for r in item.references)
        title = html.escape(str(item.meta.get("title") or item.id))
        b.append(f"<tr><td><b>{title}</b><pre>{html.escape(item.source)}</pre></td><td>{refs}</td>")
        for s in systems:
            row = by_key.get((s, item.id))
            if row is None:
                b.append("<td></td>")
                continue
            scores = " · ".join(f"{m} {_fmt(v)}" for m, v in row["metrics"].items())
            b.append(
                f"<td><pre>{diff_html(item.references[0], row['output'])}</pre>"
                f'<span class="ci">{scores}</span></td>'
            )
        b.append("</tr>")
    b.append("</table>")
    return b


def write_reports(
    run_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], items: list[Item]
) -> None:
    runs = load_history(run_dir.parent, summary["spec"])
    (run_dir / "report.md").write_text(markdown(summary), encoding="utf-8")
    (run_dir / "report.html").write_text(report_html(summary, rows, items, runs), encoding="utf-8")
    write_index(run_dir.parent)


def write_index(out: Path) -> Path:
    """`<out>/index.html`: every spec's trend per metric, and its runs with links."""
    history = load_history(out)
    body = ["<h1>Eval history</h1>"]
    for spec in sorted({r["spec"] for r in history}):
        runs = [r for r in history if r["spec"] == spec]
        metrics = sorted({m for r in runs for s in r["systems"].values() for m in s})
        body.append(f"<h2>{html.escape(spec)}</h2><div>")
        if len(runs) > 1:
            body += [trend_svg(runs, m) for m in metrics]
        else:
            body.append('<p class="muted">One run so far: trends appear from the second.</p>')
        body.append("</div><table><tr><th>run</th><th>finished</th><th>systems</th></tr>")
        for r in reversed(runs):
            link = (
                f'<a href="{html.escape(r["run_id"])}/report.html">{html.escape(r["run_id"])}</a>'
            )
            scores = "; ".join(
                f"{html.escape(s)}: " + ", ".join(f"{m} {_fmt(v)}" for m, v in ms.items())
                for s, ms in r["systems"].items()
            )
            body.append(f"<tr><td>{link}</td><td>{_when(r['finished'])}</td><td>{scores}</td></tr>")
        body.append("</table>")
    path = out / "index.html"
    path.write_text(_page("Eval history", "".join(body)), encoding="utf-8")
    return path
