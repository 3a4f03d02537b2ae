"""Every finished run, recorded; the previous run of the same spec, compared.

`<out>/history.jsonl` holds one line per finished run: its id, spec, time and each
system's corpus scores. Comparing with the previous run of the same spec uses the same
paired bootstrap as between systems, on the items both runs have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evals.metrics import lower_is_better
from evals.spec import EvalSpec
from evals.stats import bootstrap, bootstrap_means

HISTORY = "history.jsonl"


def load_history(out: Path, spec: str | None = None) -> list[dict[str, Any]]:
    path = out / HISTORY
    if not path.exists():
        return []
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return [r for r in rows if spec is None or r["spec"] == spec]


def _outputs(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    path = run_dir / "results.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["system"], {})[row["id"]] = row
    return out


def compare_runs(
    out: Path,
    previous_id: str,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    spec: EvalSpec,
    stats: dict[tuple[str, str], Any] | None = None,
) -> dict[str, Any]:
    """Per system and metric: previous score, now, difference, interval, regression flag."""
    from evals.tasks import TASKS  # here: `load_history` alone needs no task

    make = TASKS[spec.task].corpus_scorer
    before = _outputs(out / previous_id)
    now: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        now.setdefault(row["system"], {})[row["id"]] = row
    changed = _changed(out / previous_id, summary)
    result: dict[str, Any] = {
        "run_id": previous_id, "systems": {}, "regressions": [], "changed": changed,
    }  # fmt: skip
    for system, items in now.items():
        if system not in before:
            continue
        ids = [i for i in items if i in before[system]]
        if not ids:
            continue
        scorer = make(spec.metrics or [], summary["tokenize"]) if make else None
        # Sentence statistics once per system, for all its metrics; else the rows' metrics.
        if scorer is not None:
            pairs = _statistics(scorer, ids, items, before[system], system, stats or {})
        else:
            pairs = ([items[i] for i in ids], [before[system][i] for i in ids])
        per_metric = {}
        for metric in spec.metrics or []:
            if scorer is None and all(metric not in r["metrics"] for r in pairs[1]):
                continue  # the previous run did not score it (a metric added since)
            boot = _paired(spec, scorer, metric, ids, *pairs)
            pair = boot["pairs"][0]
            worse = pair["better"] == "previous" and pair["significant"]
            per_metric[metric] = {
                "previous": boot["systems"]["previous"]["score"],
                "current": boot["systems"]["current"]["score"],
                "diff": pair["diff"],
                "ci": pair["ci"],
                "p": pair["p"],
                "significant": pair["significant"],
                "regressed": worse,
                "lower_is_better": lower_is_better(metric),
            }
            if worse:
                result["regressions"].append(
                    {"system": system, "metric": metric, **per_metric[metric],
                     "changed": changed.get(system, [])}
                )  # fmt: skip
        result["systems"][system] = per_metric
    return result


def _changed(previous_dir: Path, summary: dict[str, Any]) -> dict[str, list[str]]:
    """Per system, what it ran differently from the previous run (backend, model, its
    digest or hash, prompt, params), in words: then a change in scores may be the model's."""
    from evals.identity import changes

    path = previous_dir / "summary.json"
    before = json.loads(path.read_text(encoding="utf-8"))["systems"] if path.exists() else {}
    notes = {
        name: changes((before.get(name) or {}).get("ran"), info.get("ran"))
        for name, info in summary["systems"].items()
    }
    return {name: said for name, said in notes.items() if said}


def _statistics(
    scorer: Any,
    ids: list[str],
    items: dict[str, dict[str, Any]],
    old_items: dict[str, dict[str, Any]],
    system: str,
    stats: dict[tuple[str, str], Any],
) -> tuple[list[Any], list[Any]]:
    """Each shared item's sentence statistics, now and in the previous run."""
    cur = [
        stats.get((system, i)) or scorer.item(items[i]["output"], items[i]["references"])
        for i in ids
    ]
    old = [scorer.item(old_items[i]["output"], items[i]["references"]) for i in ids]
    return cur, old


def _paired(
    spec: EvalSpec, scorer: Any, metric: str, ids: list[str], cur: list[Any], old: list[Any]
) -> dict[str, Any]:
    """One metric's paired bootstrap, this run against the previous, on the shared items:
    from corpus statistics when the task scores so, else from each row's own metric."""
    if scorer is None:  # items a metric does not score (None) are left out of it
        both = [n for n, (c, o) in enumerate(zip(cur, old, strict=True))
                if None not in (c["metrics"].get(metric), o["metrics"].get(metric))]  # fmt: skip
        values = {
            "current": [cur[n]["metrics"][metric] for n in both],
            "previous": [old[n]["metrics"][metric] for n in both],
        }
        return bootstrap_means(values, [ids[n] for n in both], spec.bootstrap, spec.seed)
    arrays = {
        "current": np.array([r[metric] for r in cur]),
        "previous": np.array([r[metric] for r in old]),
    }
    return bootstrap(scorer, metric, arrays, ids, spec.bootstrap, spec.seed)


def record_run(
    out: Path,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    spec: EvalSpec,
    stats: dict[tuple[str, str], Any] | None = None,
) -> dict[str, Any] | None:
    """Compare with the previous run of this spec (if any), then add this run to history."""
    earlier = [r for r in load_history(out, spec.name) if r["run_id"] != summary["run_id"]]
    comparison = None
    if earlier and (out / earlier[-1]["run_id"]).exists():
        comparison = compare_runs(out, earlier[-1]["run_id"], summary, rows, spec, stats)
    line = {
        "run_id": summary["run_id"],
        "spec": spec.name,
        "task": spec.task,
        "finished": summary["finished"],
        "systems": {
            name: {m: v["score"] for m, v in info["metrics"].items()}
            for name, info in summary["systems"].items()
        },
        "ran": {name: info.get("ran") for name, info in summary["systems"].items()},
    }
    with (out / HISTORY).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return comparison
