"""A run's folder: made or found again (resume), results appended line by line, failures
recorded, and finished with history and reports.

`<out>/<run-id>/` holds `run.json` (the spec and its fingerprint), `results.jsonl` (one line
per system and item, appended whole), `errors.jsonl` (model calls that failed: asked again on
resume) and, once finished, `summary.json` and the reports.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from evals.data import Item
from evals.spec import EvalSpec
from pipelines.errors import BackendError, PromptTruncatedWarning, UsageError
from pipelines.inputs import writable_folder


@contextmanager
def truncation_recorded() -> Iterator[None]:
    """During a run each cut prompt is recorded with its item, not printed as it happens."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        yield


def new_run_dir(out: Path, spec: EvalSpec) -> Path:
    """`<out>/<UTC time>-<spec>-<fingerprint>`, made now; ids sort by time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        run_dir = out / f"{stamp}{n:03d}Z-{spec.name}-{spec.fingerprint()[:6]}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise UsageError(f"cannot make a new run folder in {out}")


def find_unfinished(out: Path, spec: EvalSpec) -> Path | None:
    for run_dir in sorted(out.glob(f"*-{spec.name}-*"), reverse=True):
        meta = run_dir / "run.json"
        if not meta.exists() or (run_dir / "summary.json").exists():
            continue
        if json.loads(meta.read_text(encoding="utf-8")).get("fingerprint") == spec.fingerprint():
            return run_dir
    return None


def find_run(out: Path, ref: str) -> Path:
    """A finished run's folder from what a user types: a run folder, a run id in `out` (as
    `eval run` printed it), or `latest` (the newest finished run there)."""
    given = Path(ref)
    if given.is_dir() or given.is_file():
        if not (given / "summary.json").exists():
            raise UsageError(
                f"{given} is not a finished run (no summary.json)",
                hint="pass a run id, `latest`, or DIR/<run-id>",
            )
        return given
    finished = sorted(p.parent for p in out.glob("*/summary.json")) if out.is_dir() else []
    if ref == "latest" and finished:
        return finished[-1]
    found = next((d for d in finished if d.name == ref), None)
    if found is None:
        some = ", ".join(d.name for d in finished[-3:]) or "none yet"
        raise UsageError(
            f"no finished run {ref} in {out}",
            hint=f"the latest there: {some}; `llamapipe eval history` lists them (--out for "
            "another runs folder)",
        )
    return found


def read_results(path: Path) -> list[dict[str, Any]]:
    """Complete lines only; a torn last line (killed mid-write) is cut off the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]
    if len(keep) != len(raw):
        with path.open("r+b") as f:
            f.truncate(len(keep))
    return [json.loads(line) for line in keep.decode("utf-8").splitlines() if line.strip()]


def append_line(path: Path, row: dict[str, Any]) -> None:
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write per line: a kill leaves whole lines or a torn last one
    finally:
        os.close(fd)


def open_run(out: Path, spec: EvalSpec) -> tuple[Path, bool]:
    """The unfinished run of this spec to resume, else a new one: (folder, resumed)."""
    writable_folder(out, "runs folder")
    run_dir = find_unfinished(out, spec)
    if run_dir is not None:
        return run_dir, True
    run_dir = new_run_dir(out, spec)
    meta = {
        "spec": spec.model_dump(mode="json", exclude_none=True),  # unset fields left out
        "fingerprint": spec.fingerprint(),
        "started": time.time(),
    }
    (run_dir / "run.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    return run_dir, False


def record_ran(run_dir: Path, ran: dict[str, Any]) -> None:
    """What each system ran (evals/identity.py), in run.json beside the spec."""
    path = run_dir / "run.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["systems"] = ran
    path.write_text(json.dumps(meta, ensure_ascii=False, indent=2, default=str))


def record_environment(run_dir: Path, environment: dict[str, Any]) -> None:
    """What the run ran in (evals/identity.py), in run.json; a resumed run keeps the first."""
    path = run_dir / "run.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.setdefault("environment", environment)
    path.write_text(json.dumps(meta, ensure_ascii=False, indent=2, default=str))


def finish_run(
    out: Path,
    run_dir: Path,
    spec: EvalSpec,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    items: list[Item],
    stats: dict[tuple[str, str], Any] | None = None,
) -> dict[str, Any]:
    """Compare with the previous run, record history, write summary and reports."""
    from evals.history import record_run
    from evals.report import write_reports

    summary["previous"] = record_run(out, summary, rows, spec, stats)
    (run_dir / "summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2, default=str)
    )
    write_reports(run_dir, summary, rows, items)
    return summary


class ItemsFailed(BackendError):
    """Some items' model calls failed; the rest of the run is kept, and a rerun asks again."""


@dataclass
class Failures:
    """Model calls that failed after the backend's own retries. One failing item does not
    sink a run: it is recorded (`errors.jsonl`) and asked again when the run resumes. A few
    in a row, with nothing between, mean the server is gone: then the run stops at once."""

    run_dir: Path
    in_a_row: int = 0
    count: int = 0
    first: str | None = None
    LIMIT: ClassVar[int] = 3

    def record(self, system: str, item_id: str, message: str) -> None:
        row = {"system": system, "id": item_id, "error": message, "time": time.time()}
        append_line(self.run_dir / "errors.jsonl", row)
        self.count += 1
        self.in_a_row += 1
        self.first = self.first or message
        if self.in_a_row >= self.LIMIT:
            raise ItemsFailed(
                f"{self.in_a_row} model calls in a row failed; the last: {message}",
                hint="fix the backend, then run the same command again: finished outputs "
                "are kept, the rest are asked again",
            )

    def succeeded(self) -> None:
        self.in_a_row = 0

    def check(self, total: int) -> None:
        """At the end: a run with failed items is left unfinished, to be resumed."""
        if self.count:
            raise ItemsFailed(
                f"{self.count} of {total} model calls failed (the first: {self.first}); "
                f"every other output is kept in {self.run_dir}",
                hint="run the same command again to ask those items again",
            )
