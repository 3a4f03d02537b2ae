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

    task = TASKS[spec.task]
    before = _outputs(out / previous_id)
    now: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        now.setdefault(row["system"], {})[row["id"]] = row
    result: dict[str, Any] = {"run_id": previous_id, "systems": {}, "regressions": []}
    for system, items in now.items():
        if system not in before:
            continue
        ids = [i for i in items if i in before[system]]
        if not ids:
            continue
        per_metric = {}
        make = task.corpus_scorer
        scorer = make(spec.metrics or [], summary["tokenize"]) if make else None
        if scorer is not None:
            known = stats or {}
            cur = [
                known.get((system, i)) or scorer.item(items[i]["output"], items[i]["references"])
                for i in ids
            ]
            old = [scorer.item(before[system][i]["output"], items[i]["references"]) for i in ids]
        for metric in spec.metrics or []:
            if scorer is not None:
                arrays = {
                    "current": np.array([r[metric] for r in cur]),
                    "previous": np.array([r[metric] for r in old]),
                }
                boot = bootstrap(scorer, metric, arrays, ids, spec.bootstrap, spec.seed)
            else:
                values = {
                    "current": [items[i]["metrics"][metric] for i in ids],
                    "previous": [before[system][i]["metrics"][metric] for i in ids],
                }
                boot = bootstrap_means(values, ids, spec.bootstrap, spec.seed)
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
                    {"system": system, "metric": metric, **per_metric[metric]}
                )
        result["systems"][system] = per_metric
    return result


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
    }
    with (out / HISTORY).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return comparison
