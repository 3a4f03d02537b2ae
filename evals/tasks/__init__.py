"""Eval tasks, peers under one protocol (`base.Task`), one module each:
translate and dialog (`translate.py`), pal, rag (`answers.py` holds what those two share)."""

from __future__ import annotations

from pathlib import Path

from evals.spec import EvalSpec
from evals.tasks.base import Produced, Task
from evals.tasks.pal import PALTask
from evals.tasks.rag import RAGTask
from evals.tasks.translate import Dialog, Translate
from pipelines.settings import Settings

TASKS: dict[str, type[Task]] = {t.name: t for t in (Translate, Dialog, PALTask, RAGTask)}

__all__ = ["TASKS", "Produced", "Task", "task_for"]


def task_for(spec: EvalSpec, out: Path, settings: Settings) -> Task:
    return TASKS[spec.task](spec, out, settings)
