"""Eval tasks, peers under one protocol (`base.Task`), one module each:
translate and dialog (`translate.py`), pal, rag (`answers.py` holds what those two share).

Each task class declares itself (name, metrics, the options it takes: see `base.Task`) and is
registered here; specs are checked against the registry and the runner asks it for the task
by the spec's name, so adding a task is its module and one entry in the tuple below (or
`register(MyTask)` from elsewhere, e.g. a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evals.tasks.base import Produced, Task
from evals.tasks.pal import PALTask
from evals.tasks.rag import RAGTask
from evals.tasks.translate import Dialog, Translate

if TYPE_CHECKING:
    from evals.spec import EvalSpec
    from pipelines.settings import Settings

TASKS: dict[str, type[Task]] = {}

__all__ = ["TASKS", "Produced", "Task", "register", "task_for"]


def register(task: type[Task]) -> type[Task]:
    """Make a task known by its `name` (also a class decorator)."""
    if TASKS.get(task.name, task) is not task:
        raise ValueError(f"task {task.name!r} is already {TASKS[task.name].__qualname__}")
    if not task.metrics:
        raise ValueError(f"task {task.name!r} declares no metrics")
    TASKS[task.name] = task  # the options it takes are checked against the spec's fields there
    return task


for _task in (Translate, Dialog, PALTask, RAGTask):
    register(_task)


def task_for(spec: EvalSpec, out: Path, settings: Settings) -> Task:
    return TASKS[spec.task](spec, out, settings)
