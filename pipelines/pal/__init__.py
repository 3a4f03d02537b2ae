"""PAL: program-aided answers. The model writes `solution()`, the sandbox runs it.

    from pipelines.pal import PAL
    from pipelines.sandbox import Sandbox

    with Sandbox() as sandbox:
        pal = PAL(model=chat_model, sandbox=sandbox, task="math", samples=3)
        result = pal.invoke("A box holds 12 eggs. How many eggs are in 7 boxes?")

Baselines on the same model for comparison: `Baseline(model, method="cot" | "direct")`.
"""

from pipelines.pal.answers import answer_key, parse_answer, same_answer
from pipelines.pal.baselines import Baseline
from pipelines.pal.dataset import DatasetItem, load_dataset
from pipelines.pal.extract import NoProgramError, extract_program
from pipelines.pal.pipeline import (
    PAL,
    TASKS,
    Attempt,
    PALEvent,
    PALInput,
    PALResult,
)

__all__ = [
    "PAL",
    "TASKS",
    "Attempt",
    "Baseline",
    "DatasetItem",
    "NoProgramError",
    "PALEvent",
    "PALInput",
    "PALResult",
    "answer_key",
    "extract_program",
    "load_dataset",
    "parse_answer",
    "same_answer",
]
