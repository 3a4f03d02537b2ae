"""Baselines on the same model, for comparison with PAL: direct answer, chain of thought.

Both return a `PALResult` (method "direct" or "cot", no program) so datasets, evals and
the CLI treat all three methods alike. The answer is parsed from the model's text.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from langchain_core.language_models import BaseLLM
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict

from pipelines.backends.describe import describe_model
from pipelines.errors import UsageError
from pipelines.pal.answers import display, parse_answer
from pipelines.pal.pipeline import PALResult, _question, _text
from prompts import load_prompt


class Baseline(RunnableSerializable[Any, PALResult]):
    """`method="direct"`: the answer alone. `method="cot"`: reasoning, then "The answer is"."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    method: Literal["direct", "cot"] = "cot"
    task: str = "math"
    backend: str | None = None

    @property
    def form(self) -> str:
        return "completion" if isinstance(self.model, BaseLLM) else "chat"

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> PALResult:
        return self._call_with_config(
            lambda q: self._answer(_question(q)), input, config, run_type="chain"
        )

    def _answer(self, question: str) -> PALResult:
        if not question.strip():
            raise UsageError("the question is empty", hint="ask something, e.g. 'What is 6 * 7?'")
        prompt = load_prompt(f"pal/{self.form}/{self.method}")
        rendered = prompt.invoke({"question": question})
        backend, model_name = describe_model(self.model)
        started = time.perf_counter()
        if self.form == "completion":
            text = _text(self.model.invoke(rendered.to_string(), stop=["\nQ:", "\n\n"]))
        else:
            text = _text(self.model.invoke(rendered))
        answer = parse_answer(text)
        return PALResult(
            question=question,
            method=self.method,
            task=self.task,
            answer=answer,
            ok=answer is not None,
            votes={display(answer): 1} if answer is not None else {},
            text=text,
            backend=self.backend or backend,
            model=model_name,
            error=None if answer is not None else "no answer found in the model's text",
            program=None,
            execution={"generation_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
