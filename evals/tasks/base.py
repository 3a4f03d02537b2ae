"""What an eval task is: the one small protocol the runner drives for every task.

A task knows its items (`load`), makes one system's output for one item (`produce`: from
the cache or the pipeline, safe to call from several threads), turns that into a line of
`results.jsonl` (`row`, called in the runner's one writing thread), and scores the whole
run (`summarise`). The runner does the rest for all of them alike: the run folder, resume
after a kill, calls in flight, failures, progress, history and reports (evals/runner.py).

A task also declares itself, on the class, in one place: its `name` (what `task:` says in
a spec), the `metrics` it scores, which task options of the spec and of its systems it takes,
whether its systems need a prompt, and the sacrebleu scorer runs are compared with. A spec is
checked against these (evals/spec.py); `evals/tasks/__init__.py` registers the task classes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from evals.context import RunContext

if TYPE_CHECKING:
    from evals.metrics import Scorer
    from evals.spec import EvalSpec, SystemSpec
    from pipelines.settings import Settings


@dataclass
class Produced:
    """One system's output for one item."""

    record: dict[str, Any]  # what the results line holds beyond system, id and `cached`
    cached: bool
    error: str | None = None  # the item could not run (its prompt cannot fit): recorded as is
    failed: bool = False  # the model call failed after retries: recorded, asked again on resume
    given: bool = False  # read from the system's `outputs:` file: no model made it

    @property
    def counted(self) -> bool:
        """Whether it counts as a model call or a cache hit."""
        return self.error is None and not self.given


class Task(ABC):
    """One kind of eval. Subclasses declare themselves and implement the four steps."""

    name: ClassVar[str]  # what `task:` says in a spec
    metrics: ClassVar[tuple[str, ...]]  # what it scores; a spec without `metrics:` gets all
    # The task options (fields of EvalSpec and SystemSpec that some task takes) this one
    # takes; any other task option set in a spec is an error.
    spec_fields: ClassVar[frozenset[str]] = frozenset()
    system_fields: ClassVar[frozenset[str]] = frozenset()
    needs_prompt: ClassVar[bool] = False  # each system needs a `prompt` (or its `outputs`)
    # The prompt a system without `prompt:` (or `outputs:`) uses; None: it must name one.
    default_prompt: ClassVar[str | None] = None
    # Runs are compared with sacrebleu's corpus statistics when set, else as means of each
    # row's `metrics` (evals/history.py).
    corpus_scorer: ClassVar[type[Scorer] | None] = None

    @classmethod
    def default_metrics(cls, spec: EvalSpec) -> list[str]:
        """What a spec without `metrics:` scores: all of them, unless a task says less."""
        return list(cls.metrics)

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

    def prompt_names(self, system: SystemSpec) -> list[str]:
        """The prompts the system's outputs are made with (their text is hashed in the run)."""
        return [system.prompt] if system.prompt else []

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
