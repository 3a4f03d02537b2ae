"""Paired bootstrap resampling for corpus-level metrics, optionally by group.

Each item's sufficient statistics are extracted once (sacrebleu's own per-sentence
statistics, the ones its significance tests use); a resample sums them and computes the
corpus score again, so 1,000 resamples cost milliseconds. Systems (or runs) are compared
on the same resamples: the difference's 95% interval and the share of resamples in which
the sign flips (a p-value). With a grouping key (e.g. the poem), whole groups are drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evals.metrics import Scorer, lower_is_better

ALPHA = 0.05


def resamples(groups: Sequence[str], n: int, seed: int) -> list[np.ndarray]:
    """Index arrays, one per resample; whole groups when there are fewer groups than items."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    if len(keys) == len(groups):
        return list(rng.integers(0, len(groups), size=(n, len(groups))))
    out = []
    for _ in range(n):
        picked = rng.integers(0, len(keys), size=len(keys))
        out.append(np.concatenate([members[keys[j]] for j in picked]))
    return out


def _pairs(
    per_system: dict[str, np.ndarray], points: dict[str, float], lower_better: bool
) -> list[dict[str, Any]]:
    names = list(per_system)
    sign = -1.0 if lower_better else 1.0
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diff = per_system[a] - per_system[b]
            lo, hi = np.percentile(diff, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
            better = a if sign * float(np.mean(diff)) > 0 else b
            flips = (
                float(np.mean(sign * diff <= 0))
                if better == a
                else float(np.mean(sign * diff >= 0))
            )
            out.append(
                {
                    "a": a, "b": b, "diff": round(points[a] - points[b], 4),
                    "ci": [round(lo, 4), round(hi, 4)], "p": round(flips, 4), "better": better,
                    "significant": bool(lo > 0 or hi < 0),
                }
            )  # fmt: skip
    return out


def bootstrap_means(
    values: Mapping[str, Sequence[float]], groups: Sequence[str], n: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The same paired bootstrap for per-item scores averaged (accuracy, recall@k, ...)."""
    samples = resamples(groups, n, seed)
    per_system: dict[str, np.ndarray] = {}
    points: dict[str, float] = {}
    summary: dict[str, Any] = {"systems": {}, "resamples": n, "seed": seed}
    for system, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        per_system[system] = np.array([arr[idx].mean() for idx in samples])
        points[system] = float(arr.mean()) if arr.size else 0.0
        lo, hi = np.percentile(per_system[system], [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        summary["systems"][system] = {
            "score": round(points[system], 4),
            "ci": [round(lo, 4), round(hi, 4)],
        }
    summary["pairs"] = _pairs(per_system, points, lower_better=False)
    return summary


def bootstrap(
    scorer: Scorer,
    metric: str,
    stats: Mapping[str, np.ndarray],
    groups: Sequence[str],
    n: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per system (rows of per-item statistics): score and 95% interval; per pair:
    difference, interval, p-value, all on the same resamples."""
    samples = resamples(groups, n, seed)
    per_system: dict[str, np.ndarray] = {}
    points: dict[str, float] = {}
    summary: dict[str, Any] = {"systems": {}, "resamples": n, "seed": seed}
    for system, rows in stats.items():
        per_system[system] = np.array(
            [scorer.score(metric, rows[idx].sum(axis=0)) for idx in samples]
        )
        points[system] = scorer.score(metric, rows.sum(axis=0))
        lo, hi = np.percentile(per_system[system], [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        summary["systems"][system] = {
            "score": round(points[system], 4),
            "ci": [round(lo, 4), round(hi, 4)],
        }
    summary["pairs"] = _pairs(per_system, points, lower_is_better(metric))
    return summary
