"""A run's items as a table: one row per system and item (its output, what it was scored
against, each metric), written as CSV or JSON Lines (UTF-8, Korean as is)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from evals.runs import read_results
from pipelines.errors import UsageError

FORMATS = (".csv", ".jsonl")
COLUMNS = ("system", "id", "input", "output", "expected", "references")


def item_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Each results line, flat: the columns above (those the task has), then its metrics."""
    rows = read_results(run_dir / "results.jsonl")
    metrics = list(dict.fromkeys(m for r in rows for m in r.get("metrics", {})))
    present = [c for c in COLUMNS if any(c in r for r in rows)]
    return [
        {**{c: r.get(c) for c in present}, **{m: r["metrics"].get(m) for m in metrics},
         "cached": r.get("cached")}
        for r in rows
    ]  # fmt: skip


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " | ".join(map(str, value))
    return "" if value is None else value


def export_items(run_dir: Path, path: Path) -> int:
    """Write the run's items to `path` (.csv or .jsonl); how many rows."""
    if path.suffix.lower() not in FORMATS:
        raise UsageError(
            f"cannot write items as {path.suffix or 'a file without a suffix'}: {path}",
            hint="name a .csv or .jsonl file, e.g. -o items.csv",
        )
    rows = item_rows(run_dir)
    try:
        with path.open("w", encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".jsonl":
                f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            else:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(COLUMNS))
                writer.writeheader()
                writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror}", hint="pick another -o path"
        ) from None
    return len(rows)
