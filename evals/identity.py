"""What each system of a run ran, recorded with the run and compared between runs: the
backend, the model and what pins it down (Ollama's digest, the GGUF file's sha256, the
served model id), the prompt (its name and a hash of its text), the sampling parameters
and the task's options; or the file of outputs it was given."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import LlamapipeError

if TYPE_CHECKING:
    from evals.spec import EvalSpec, SystemSpec
    from evals.tasks.base import Task
    from pipelines.settings import Settings

PARAMS = ("temperature", "seed", "max_tokens", "num_ctx", "stop")
PINS = ("digest", "sha256", "served_model")  # what a provider's identity may pin a model by


def prompt_identity(names: list[str]) -> dict[str, str] | None:
    """The prompts' names and a hash of their text (a changed template changes it)."""
    from prompts import load_prompt

    if not names:
        return None
    text = "\0".join(load_prompt(Path(n) if n.endswith(".jinja") else n).source for n in names)
    return {"name": ", ".join(names), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def ran_by_model(task: Task, system: SystemSpec, backend: Any, settings: Settings) -> dict:
    from pipelines.backends.registry import REGISTRY

    try:
        pinned = REGISTRY.identity(settings, backend) if hasattr(backend, "reason") else {}
    except (LlamapipeError, OSError) as exc:  # the run goes on: say why it is not pinned
        pinned = {"identity_error": str(exc)}
    options = sorted(task.system_fields - {"prompt", "outputs"})
    return {
        "backend": backend.name,
        "model": backend.model,
        **{k: v for k, v in pinned.items() if v is not None},
        "prompt": prompt_identity(task.prompt_names(system)),
        "params": {k: getattr(settings, k) for k in PARAMS},
        "options": {k: getattr(system, k) for k in options},
    }


def environment(settings: Settings) -> dict[str, Any]:
    """What a run ran in: every setting's value (secret ones left out), the config file, the
    folder and the interpreter; a scheduled run records the same as the run it pins."""
    from pydantic import SecretStr

    values = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr):
            values[name] = str(value) if isinstance(value, Path) else value
    return {
        "settings": values,
        "config_file": str(settings.config_file),
        "cwd": os.getcwd(),
        "python": sys.executable,
    }


def ran_from_outputs(spec: EvalSpec, system: SystemSpec) -> dict:
    assert system.outputs is not None
    data = spec.resolve(system.outputs).read_bytes()
    return {"given": str(system.outputs), "sha256": hashlib.sha256(data).hexdigest()[:16]}


def label(ran: dict[str, Any] | None) -> str:
    """One line: `ollama llama3.1:8b @a1b2c3d4e5f6`, or `given outputs.jsonl`."""
    if not ran:
        return "not recorded"
    if "given" in ran:
        return f"given {ran['given']} @{ran['sha256'][:12]}"
    pin = next((str(ran[k]) for k in PINS if ran.get(k) and ran[k] != ran["model"]), "")
    pin = pin.removeprefix("sha256:")
    return f"{ran['backend']} {ran['model']}" + (f" @{pin[:12]}" if pin else "")


def changes(before: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """What differs between two runs of one system, in words; [] when nothing does."""
    if not now:
        return []
    if not before:
        return ["the previous run did not record what this system ran"]
    notes = []
    if label(before) != label(now):
        notes.append(f"ran {label(before)}, now {label(now)}")
    was, prompt = before.get("prompt") or {}, now.get("prompt") or {}
    if was != prompt:
        notes.append(f"prompt {was.get('name')} #{was.get('sha256')} → "
                     f"{prompt.get('name')} #{prompt.get('sha256')}")  # fmt: skip
    for part in ("params", "options"):
        old, new = before.get(part) or {}, now.get(part) or {}
        notes += [f"{k} {old.get(k)} → {new.get(k)}" for k in sorted({*old, *new})
                  if old.get(k) != new.get(k)]  # fmt: skip
    return notes
