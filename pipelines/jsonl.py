"""JSON Lines files read the same way everywhere: UTF-8, one object per line, blank lines
skipped, and every problem a `UsageError` naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError
from pipelines.inputs import read_text


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    lines = read_text(path, what).splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}:{number}: not JSON ({exc.msg})", hint="one object per line"
            ) from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object", hint="one object per line")
        rows.append((number, row))
    return rows
