"""Helpers the benchmarks share."""

from __future__ import annotations

import statistics


def percentiles(samples: list[float], unit: str = "ms", count: str = "runs") -> dict[str, float]:
    """p50 and p95 of `samples` (nearest-rank p95), rounded, with how many there were."""
    ordered = sorted(samples)
    return {
        f"p50_{unit}": round(statistics.median(ordered), 3),
        f"p95_{unit}": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        count: len(ordered),
    }
