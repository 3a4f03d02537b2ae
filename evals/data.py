"""Eval datasets: JSONL, every line checked, errors naming file, line and field.

Translation lines: {"id": str, "source": str, "references": [str, ...], "meta": {...}}.
Dialog datasets (the everyday-dialog JSON, `pipelines/chat/dialogs.py`) become the same items:
one per assistant turn, the user's message before it as `source`, the turns before that in
`meta.history`, the assistant's utterance as the reference.
A local overlay (`<dataset folder>/local/<dataset file name>`, git-ignored) adds
references by id, for texts a user may use but the project may not carry.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipelines.errors import UsageError
from pipelines.jsonl import read_jsonl


def bundled(name: str) -> Path:
    """A dataset that ships with llamapipe (`evals/datasets/<name>`), found as package data
    so it is there from a wheel as from the checkout."""
    return Path(str(files("evals").joinpath("datasets", name)))  # pip unpacks: a real file


PAL_PROBLEMS = bundled("pal/problems.jsonl")  # the PAL benchmark's grade-school problems


class Item(BaseModel):
    id: str
    source: str
    references: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


def _field(
    path: Path, number: int, row: dict[str, Any], name: str, kind: type, example: str
) -> Any:
    value = row.get(name)
    if not isinstance(value, kind):
        raise UsageError(
            f"{path}:{number}: field {name!r} must be {kind.__name__}, got {type(value).__name__}",
            hint=f"e.g. {example}",
        )
    return value


def load_translation(path: Path) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for number, row in read_jsonl(path, "dataset"):
        item_id = str(_field(path, number, row, "id", str, '"id": "cheoyongga"'))
        source = _field(path, number, row, "source", str, '"source": "東京明期月良 ..."')
        refs = _field(path, number, row, "references", list, '"references": ["..."]')
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise UsageError(f"{path}:{number}: 'references' needs at least one non-empty string")
        if item_id in seen:
            raise UsageError(
                f"{path}:{number}: duplicate id {item_id!r}", hint="ids must be unique"
            )
        seen.add(item_id)
        items.append(Item(id=item_id, source=source, references=refs, meta=row.get("meta") or {}))
    if not items:
        raise UsageError(f"{path} holds no items", hint="one JSON object per line")
    _apply_overlay(path, items)
    return items


def load_dialog_items(path: Path) -> list[Item]:
    from pipelines.chat.dialogs import next_turn_items, read_dialogs

    items = [Item.model_validate(row) for row in next_turn_items(read_dialogs(path))]
    if not items:
        raise UsageError(
            f"{path} has no assistant turn that follows a user turn",
            hint="each dialog alternates user and system (assistant) utterances",
        )
    if len({i.id for i in items}) != len(items):
        raise UsageError(f"{path}: dialog ids repeat", hint="give each dialog its own id")
    return items


def overlay_path(path: Path) -> Path:
    return path.parent / "local" / path.name


def _apply_overlay(path: Path, items: list[Item]) -> None:
    overlay = overlay_path(path)
    if not overlay.exists():
        return
    by_id = {item.id: item for item in items}
    for number, row in read_jsonl(overlay, "overlay"):
        item = by_id.get(str(row.get("id")))
        if item is None:
            raise UsageError(
                f"{overlay}:{number}: no item with id {row.get('id')!r} in {path.name}"
            )
        refs = _field(overlay, number, row, "references", list, '"references": ["..."]')
        item.references += [r for r in refs if isinstance(r, str) and r.strip()]
        item.meta.setdefault("local_references", []).append(
            {"author": row.get("author"), "licence": row.get("licence"), "count": len(refs)}
        )


def load_outputs(path: Path) -> dict[str, str]:
    """Outputs made elsewhere: {"id", "output"} lines."""
    out: dict[str, str] = {}
    for number, row in read_jsonl(path, "outputs file"):
        item_id = str(_field(path, number, row, "id", str, '"id": "cheoyongga"'))
        out[item_id] = str(_field(path, number, row, "output", str, '"output": "..."'))
    return out
