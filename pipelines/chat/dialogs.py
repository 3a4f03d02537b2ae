"""Saved conversations as datasets, and dialog datasets as eval items.

Two formats:
- dialogs: the everyday-dialog JSON used for Korean dialog corpora,
  `{"dialogs": [{"id": 1, "conversation": [{"speaker": "user" | "system", "utterance": "..."}]}]}`
  ("system" is the assistant's side);
- messages: chat JSONL, one conversation per line, `{"messages": [{"role", "content"}]}`, as
  common LoRA fine-tuning tools read it (a session's system prompt comes first).

An answer stopped by Ctrl-C is not exported (nor the message it answered): half an answer
is not something to fine-tune on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pipelines.chat.store import Message, SessionStore
from pipelines.errors import UsageError
from pipelines.inputs import read_text

Format = Literal["dialogs", "messages"]
SPEAKER = {"user": "user", "assistant": "system"}  # our roles -> the dialog format's speakers
ROLE = {speaker: role for role, speaker in SPEAKER.items()}


def complete_turns(messages: list[Message]) -> list[Message]:
    """The messages without stopped answers and the questions they answered."""
    kept: list[Message] = []
    for message in messages:
        if message.role == "assistant" and message.meta.get("stopped"):
            if kept and kept[-1].role == "user":
                kept.pop()
            continue
        kept.append(message)
    return kept


def export(store: SessionStore, names: Iterable[str], form: Format) -> str:
    """The sessions `names` (all when empty) in `form`, as text to write."""
    chosen = list(names) or [s.name for s in reversed(store.sessions())]  # oldest first
    conversations = [(n, store.system(n), complete_turns(store.messages(n))) for n in chosen]
    conversations = [c for c in conversations if c[2]]
    if form == "dialogs":
        dialogs = [
            {"id": number, "session": name,
             "conversation": [{"speaker": SPEAKER[m.role], "utterance": m.content} for m in turns]}
            for number, (name, _, turns) in enumerate(conversations, start=1)
        ]  # fmt: skip
        return json.dumps({"dialogs": dialogs}, ensure_ascii=False, indent=1) + "\n"
    lines = []
    for _, system, turns in conversations:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": m.role, "content": m.content} for m in turns]
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def read_dialogs(path: Path) -> list[dict[str, Any]]:
    """The dialogs of a dialog-format file, checked: what is wrong names the dialog."""
    try:
        doc = json.loads(read_text(path, "dialog dataset"))
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})",
            hint='a dialog dataset is {"dialogs": [{"id": 1, "conversation": [...]}]}',
        ) from None
    dialogs = doc.get("dialogs") if isinstance(doc, dict) else None
    if not isinstance(dialogs, list) or not dialogs:
        raise UsageError(
            f"{path} holds no dialogs",
            hint='a dialog dataset is {"dialogs": [{"id": 1, "conversation": [...]}]}',
        )
    for number, dialog in enumerate(dialogs, start=1):
        turns = dialog.get("conversation") if isinstance(dialog, dict) else None
        ok = isinstance(turns, list) and turns and all(
            isinstance(t, dict) and t.get("speaker") in ROLE
            and isinstance(t.get("utterance"), str) for t in turns
        )  # fmt: skip
        if not ok:
            raise UsageError(
                f"{path}: dialog {number} ({dialog.get('id') if isinstance(dialog, dict) else '?'})"
                ' needs a conversation of {"speaker": "user"|"system", "utterance": ...}',
                hint="speakers are 'user' and 'system' (the assistant)",
            )
    return dialogs


def next_turn_items(dialogs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One eval item per assistant turn that follows a user turn: the turns before it are
    the history, the user turn is the source, the assistant's utterance the reference."""
    for number, dialog in enumerate(dialogs, start=1):
        dialog_id = str(dialog.get("id", number))
        turns = [
            {"role": ROLE[t["speaker"]], "content": t["utterance"].strip()}
            for t in dialog["conversation"]
        ]
        for i, turn in enumerate(turns):
            if turn["role"] == "assistant" and i and turns[i - 1]["role"] == "user":
                if not turn["content"] or not turns[i - 1]["content"]:
                    continue
                yield {
                    "id": f"{dialog_id}-{i}",
                    "source": turns[i - 1]["content"],
                    "references": [turn["content"]],
                    "meta": {"history": turns[: i - 1], "group": dialog_id},
                }
