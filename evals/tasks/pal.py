"""The PAL task: a PAL dataset ({"id", "question", "answer"}); each system is a method (pal,
cot, direct) on a backend; the metric is accuracy, answers compared as numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evals.context import RunContext, backend_for
from evals.tasks.answers import AnswerTask

if TYPE_CHECKING:
    from evals.spec import SystemSpec


BASELINES = ("cot", "direct")


class PALTask(AnswerTask):
    name = "pal"
    metrics = ("accuracy",)
    system_fields = frozenset({"method"})

    def load(self) -> list[Any]:
        from pipelines.pal import load_dataset

        return load_dataset(self.spec.resolve(self.spec.dataset))

    def item_id(self, item: Any) -> str:
        return str(item.id)

    def question(self, item: Any) -> str:
        return str(item.question)

    def expected(self, item: Any) -> Any:
        return item.answer

    def cache_parts(self, system: SystemSpec, item: Any) -> dict[str, Any]:
        return {"task_prompt": getattr(item, "task", None), "index": None}

    def prompt_names(self, system: SystemSpec) -> list[str]:
        """PAL's prompts for the method (each form: chat or completion, as the model takes)."""
        from prompts import list_prompts

        def used(name: str) -> bool:
            last = name.rsplit("/", 1)[-1]
            return last == system.method if system.method != "pal" else last not in BASELINES

        return [n for n in list_prompts() if n.startswith("pal/") and used(n)]

    def open(self) -> None:
        from pipelines.toolkit import Toolkit

        self.toolkit = Toolkit(self.settings)  # PAL's sandbox, made as `pal ask` makes it

    def close(self) -> None:
        self.toolkit.close()

    def answer(self, ctx: RunContext, system: SystemSpec, item: Any) -> dict[str, Any]:
        from pipelines.pal import same_answer

        backend, _ = backend_for(ctx, system)
        runner = self.toolkit.pal(method=system.method, task=item.task or "math", backend=backend)
        result = runner.invoke(item.question)
        correct = bool(result.ok and same_answer(result.answer, item.answer))
        return {
            "output": result.answer,
            "program": result.program,
            "metrics": {"accuracy": 100.0 * correct},
        }
