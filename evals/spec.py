"""Eval specs: one YAML file names the task, the dataset, the systems and the metrics.

    name: hyangga-modern-korean
    task: translate                  # a task in evals/tasks/ (translate, dialog, pal, rag)
    dataset: evals/datasets/hyangga.jsonl
    systems:
      - {name: zero-shot, prompt: hyangga/zero_shot, backend: auto, params: {temperature: 0}}
      - {name: few-shot, prompt: hyangga/few_shot, shots: 2}
      - {name: deepl, outputs: path/to/outputs.jsonl}
    metrics: [chrf, chrf++, bleu, ter]
    tokenize: char

Relative paths are relative to the spec file's folder, then to the current directory.

What a task takes (its metrics, its options: `shots`, `k`, `index`, ...) each task class
declares (evals/tasks/); a spec is checked against the task it names, looked up when a spec
is checked (the tasks import this module).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import UsageError, first_problem
from pipelines.inputs import read_text

if TYPE_CHECKING:
    from evals.tasks.base import Task


def _tasks() -> dict[str, type[Task]]:
    """The registered tasks (evals/tasks/), imported only when a spec is checked: the
    harness's lighter commands (history, schedule) never load them. The tasks refer to
    this module's classes in type hints only."""
    from evals.tasks import TASKS

    for task in TASKS.values():
        for model, fields in ((EvalSpec, task.spec_fields), (SystemSpec, task.system_fields)):
            unknown = sorted(set(fields) - set(model.model_fields))
            if unknown:
                raise ValueError(f"task {task.name!r}: {model.__name__} has no field {unknown}")
    return TASKS


def _not_taken(
    model: BaseModel, task: str, fields_of: Callable[[type[Task]], frozenset[str]]
) -> str | None:
    """A task option (a field some task takes) set to other than its default, which this
    task does not take, in words; None when there is none."""
    tasks = _tasks()
    for field, info in type(model).model_fields.items():
        takers = [name for name, t in tasks.items() if field in fields_of(t)]
        if not takers or task in takers:
            continue
        if getattr(model, field) != info.get_default(call_default_factory=True):
            return f"`{field}` is for task {' or '.join(takers)}, not {task}"
    return None


def known_backend(name: str | None) -> str | None:
    from pipelines.backends.registry import REGISTRY

    if name is not None and name not in REGISTRY.choices():
        choices = ", ".join(REGISTRY.choices())
        raise ValueError(f"unknown backend {name!r}; use one of: {choices}")
    return name


class SystemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    prompt: str | None = None  # a prompt name under prompts/ or a .jinja path
    outputs: Path | None = None  # outputs made elsewhere: {"id", "output"} lines
    backend: str | None = None  # a registered backend (pipelines/backends/), or auto
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)  # temperature, seed, max_tokens, ...
    # Task options: each task says which it takes (`Task.system_fields`).
    shots: int = Field(0, ge=0, le=20)
    method: Literal["pal", "cot", "direct"] = "pal"
    k: int = Field(5, ge=1, le=50)
    concurrency: int | None = Field(None, ge=1, le=256)  # model calls at once (see Settings)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str | None) -> str | None:
        return known_backend(name)

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        if self.outputs is not None and (self.prompt or self.shots):
            raise ValueError("a system has either `outputs` or a `prompt`, not both")
        return self


class JudgeSpec(BaseModel):
    """The model that judges answers (the RAG task's `judge:`): a backend, model, params."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str | None) -> str | None:
        return known_backend(name)


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    task: str = "translate"  # a registered task's name (evals/tasks/); none: translate
    dataset: Path
    systems: list[SystemSpec] = Field(min_length=1)
    metrics: list[str] | None = None
    tokenize: str | None = None  # BLEU tokenizer; default: char for Korean targets, else 13a
    group_by: str | None = None  # a `meta` key to resample by (default: meta.poem / meta.group)
    bootstrap: int = Field(default=1000, ge=1000, le=100_000)  # paired bootstrap resamples
    seed: int = 0
    concurrency: int | None = Field(None, ge=1, le=256)  # for every system without its own
    limit: int | None = Field(None, ge=1)  # only the first N items (`eval run --limit`)
    # Task options: each task says which it takes (`Task.spec_fields`).
    index: Path | None = None  # the index folder to ask
    corpus: Path | None = None  # documents to ingest into <out>/<name>-index
    judge: JudgeSpec | None = None  # a model that judges answers (off unless set)
    path: Path | None = Field(None, exclude=True)  # where the spec was read from

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in _tasks():
            raise ValueError(f"unknown task {task!r}; use one of: {', '.join(_tasks())}")
        return task

    @model_validator(mode="after")
    def _check(self) -> EvalSpec:
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique, got {names}")
        task = _tasks()[self.task]
        allowed = task.metrics
        if self.metrics is None:
            self.metrics = task.default_metrics(self)
        unknown = [m for m in self.metrics if m not in allowed]
        if unknown:
            raise ValueError(f"task {self.task} has no metric {unknown}; use {list(allowed)}")
        problem = _not_taken(self, self.task, lambda t: t.spec_fields)
        if problem:
            raise ValueError(problem)
        for system in self.systems:
            problem = _not_taken(system, self.task, lambda t: t.system_fields)
            if problem:
                raise ValueError(f"system {system.name}: {problem}")
            if system.outputs is None and system.prompt is None and task.needs_prompt:
                if task.default_prompt is None:
                    raise ValueError(f"system {system.name}: give it a `prompt` or `outputs`")
                system.prompt = task.default_prompt  # recorded in the run as if written
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the spec, relative to the spec's folder when it exists there."""
        if path.is_absolute() or self.path is None:
            return path
        beside = self.path.parent / path
        return beside if beside.exists() or not path.exists() else path

    def fingerprint(self) -> str:
        """Changes when anything that affects results changes (used to resume a run); how
        many calls run at once does not, so a run resumes under another concurrency."""
        doc = self.model_dump(
            mode="json", exclude={"concurrency": True, "systems": {"__all__": {"concurrency"}}}
        )
        for added in ("limit", "judge"):  # unset, a spec keeps the fingerprint it had
            if doc.get(added) is None:
                doc.pop(added, None)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def with_overrides(
    spec: EvalSpec, *, backend: str | None, model: str | None, limit: int | None
) -> EvalSpec:
    """The spec with every system that asks a model on `backend` and `model` (a system's
    own `model:` is dropped when only the backend is named: it named a model of another),
    and only the first `limit` items; checked as a spec file is. They are part of the spec
    the run records, and of its fingerprint."""
    if backend is None and model is None and limit is None:
        return spec
    doc = spec.model_dump()
    for system in doc["systems"]:
        if system["outputs"] is not None:
            continue  # outputs made elsewhere: no model to change
        if backend is not None and backend != system["backend"]:
            system.update(backend=backend, model=None)
        if model is not None:
            system["model"] = model
    if limit is not None:
        doc["limit"] = limit
    try:
        changed = EvalSpec.model_validate(doc)
    except ValidationError as exc:
        raise UsageError(first_problem(exc)[1], hint="see `llamapipe models`") from None
    changed.path = spec.path
    return changed


def check_inputs(spec: EvalSpec) -> None:
    """What a run will read exists: dataset, prompts, outputs files, index or corpus.

    Checked before any run folder is made or model loaded (and by `eval schedule`, so a
    broken spec fails when it is scheduled, not at 3 a.m.).
    """
    from prompts import load_prompt

    where = f"{spec.path}: " if spec.path else ""
    paths = [("dataset", spec.dataset), ("index", spec.index), ("corpus", spec.corpus)]
    paths += [(f"system {s.name}: outputs", s.outputs) for s in spec.systems]
    for what, path in paths:
        if path is not None and not spec.resolve(path).exists():
            raise UsageError(
                f"{where}{what} {path} does not exist",
                hint="paths in a spec are relative to the spec's folder",
            )
    for system in spec.systems:
        if system.prompt is not None:
            try:
                load_prompt(system.prompt)
            except UsageError as exc:
                raise UsageError(f"{where}system {system.name}: {exc.message}", exc.hint) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's many lines as one: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"not valid YAML{where}: {problem}"


def load_spec(path: str | Path) -> EvalSpec:
    path = Path(path)
    text = read_text(path, "spec")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(
            f"{path}: {yaml_problem(exc)}", hint="check the indentation there"
        ) from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"{path}: a spec is a mapping (name, task, dataset, systems, ...)",
            hint="see evals/specs/demo.yaml for one that works",
        )
    try:
        spec = EvalSpec.model_validate(raw)
    except ValidationError as exc:
        where, message, _ = first_problem(exc)
        raise UsageError(
            f"{path}: {where}: {message}" if where else f"{path}: {message}",
            hint="see the README's Evals section for the spec format",
        ) from None
    spec.path = path
    return spec
