"""What an eval task is: the one small protocol the runner drives for every task.

A task knows its items (`load`), makes one system's output for one item (`produce`: from
the cache or the pipeline, safe to call from several threads), turns that into a line of
`results.jsonl` (`row`, called in the runner's one writing thread), and scores the whole
run (`summarise`). The runner does the rest for all of them alike: the run folder, resume
after a kill, calls in flight, failures, progress, history and reports (evals/runner.py).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evals.context import RunContext
from evals.spec import EvalSpec, SystemSpec
from pipelines.settings import Settings


@dataclass
class Produced:
    """One system's output for one item."""

    record: dict[str, Any]  # what the results line holds beyond system, id and `cached`
    cached: bool
    error: str | None = None  # the item could not run (its prompt cannot fit): recorded as is
    failed: bool = False  # the model call failed after retries: recorded, asked again on resume

    @property
    def counted(self) -> bool:
        """Whether it counts as a model call or a cache hit."""
        return self.error is None


class Task(ABC):
    """One kind of eval. Subclasses set `name` and implement the four steps."""

    name: ClassVar[str]

    def __init__(self, spec: EvalSpec, out: Path, settings: Settings) -> None:
        self.spec = spec
        self.out = out
        self.settings = settings

    @abstractmethod
    def load(self) -> list[Any]:
        """The dataset's items."""

    @abstractmethod
    def item_id(self, item: Any) -> str: ...

    def open(self) -> None:  # noqa: B027 - most tasks share nothing
        """Make what `produce` shares across items (a sandbox, an index)."""

    def close(self) -> None:  # noqa: B027
        """Release what `open` made."""

    def prepared(self, system: SystemSpec, items: list[Any]) -> list[tuple[Any, Produced]] | None:
        """Outputs a system already has (made elsewhere), or None: produce them."""
        return None

    @abstractmethod
    def produce(self, ctx: RunContext, system: SystemSpec, item: Any) -> Produced: ...

    @abstractmethod
    def row(self, system: SystemSpec, item: Any, produced: Produced) -> dict[str, Any]:
        """The results line (with its sentence-level metrics), in the writing thread."""

    @abstractmethod
    def summarise(
        self,
        items: list[Any],
        rows: list[dict[str, Any]],
        calls: dict[str, dict[str, int]],
        run_dir: Path,
        resumed: bool,
    ) -> dict[str, Any]:
        """`summary.json`: corpus scores with intervals, pairs, calls."""

    def report_items(self) -> tuple[list[Any], dict[tuple[str, str], Any] | None]:
        """What the reports show beside the rows (translation: sources and statistics)."""
        return [], None


def summary_document(
    spec: EvalSpec,
    run_dir: Path,
    items: int,
    systems: dict[str, Any],
    pairs: dict[str, Any],
    resumed: bool,
    *,
    tokenize: str | None = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """`summary.json`, for every task."""
    return {
        "run_id": run_dir.name,
        "spec": spec.name,
        "task": spec.task,
        "fingerprint": spec.fingerprint(),
        "dataset": str(spec.dataset),
        "items": items,
        "tokenize": tokenize,
        "group_by": group_by,
        "bootstrap": {"resamples": spec.bootstrap, "seed": spec.seed},
        "finished": time.time(),
        "resumed": resumed,
        "systems": systems,
        "pairs": pairs,
    }
