"""PAL datasets: JSONL lines of {"id", "question", "answer"} (GSM8K files work as they are).

GSM8K answers end with "#### 72": the part after "####" is the answer. Lines may name a
`task` (a PAL prompt); otherwise the caller's task applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipelines.errors import UsageError
from pipelines.jsonl import read_jsonl


class DatasetItem(BaseModel):
    id: str
    question: str
    answer: Any
    task: str | None = None
    lang: str | None = None


def load_dataset(path: str | Path) -> list[DatasetItem]:
    """Every line checked; a bad one is a UsageError naming the file, line and problem."""
    path = Path(path)
    items: list[DatasetItem] = []
    for number, row in read_jsonl(path, "dataset"):
        if "question" not in row or "answer" not in row:
            raise UsageError(
                f'{path}:{number}: needs "question" and "answer"',
                hint='e.g. {"id": "1", "question": "2 + 2?", "answer": 4}',
            )
        answer = row["answer"]
        if isinstance(answer, str) and "####" in answer:
            answer = answer.rsplit("####", 1)[1].strip().replace(",", "")
        items.append(
            DatasetItem(
                id=str(row.get("id", number)),
                question=str(row["question"]),
                answer=answer,
                task=row.get("task"),
                lang=row.get("lang"),
            )
        )
    if not items:
        raise UsageError(f"{path} holds no problems", hint="one JSON object per line")
    return items
