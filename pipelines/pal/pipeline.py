"""PAL: the model writes a program, the sandbox runs it, retries get the error, samples vote.

    pal = PAL(model=backend.chat, sandbox=sandbox, task="math", samples=3)
    result = pal.invoke("A box holds 12 eggs. How many eggs are in 7 boxes?")
    result.answer, result.program, result.votes

A chat model gets the chat-form prompt (`prompts/pal/chat/<task>.jinja`); a completion
model (`BaseLLM`) gets the completion form, which starts `def solution():` for it.

A retry sends back the failed programs and their errors; when they no longer fit the
model's context window, the oldest are left out (the question always stays).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

from langchain_core.language_models import BaseLanguageModel, BaseLLM
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backends.describe import describe_model, with_sampling
from pipelines.budget import Budget, budget_for
from pipelines.errors import UsageError
from pipelines.inputs import question_text
from pipelines.pal.answers import answer_key, display
from pipelines.pal.extract import NoProgramError, extract_program
from prompts import FilePrompt, list_prompts, load_prompt

TASKS = ("math", "math_ko", "date", "counting", "colored_objects", "penguins")
SAMPLING_TEMPERATURE = 0.7  # when samples > 1 and no temperature was given
COMPLETION_START = "def solution():\n    "  # how every completion prompt ends
COMPLETION_STOP = ["\n# Q:", "\n\n\n", "```", "\nQ:"]


class PALInput(BaseModel):
    question: str


class AttemptError(BaseModel):
    type: str
    message: str


class Attempt(BaseModel):
    """One program the model wrote, and what became of it."""

    sample: int
    attempt: int
    program: str | None
    reply: str
    ok: bool
    answer: Any = None
    error: AttemptError | None = None
    killed: str | None = None
    generation_ms: float
    sandbox_ms: float = 0.0
    execution: Any = Field(default=None, exclude=True, repr=False)  # the SandboxResult


class PALResult(BaseModel):
    """The answer, the program that produced it, the vote, and every attempt."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    method: Literal["pal", "cot", "direct"] = "pal"
    task: str
    answer: Any = None
    ok: bool
    program: str | None = None
    execution: Any = None  # the winning SandboxResult
    votes: dict[str, int] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    text: str | None = None  # the model's text, for the baselines
    backend: str
    model: str
    error: str | None = None
    unsafe: bool = False  # the programs ran without OS walls (sandbox isolation "unsafe")

    def to_json(self) -> dict[str, Any]:
        """The documented `pal ask --json` document; `"unsafe": true` when the programs ran
        without OS walls."""
        return {
            "answer": self.answer,
            "program": self.program,
            "ok": self.ok,
            "votes": self.votes,
            "attempts": [a.model_dump() for a in self.attempts],
            "backend": self.backend,
            "model": self.model,
            "error": self.error,
            **({"unsafe": True} if self.unsafe else {}),
        }


class PALEvent(BaseModel):
    """Progress while `stream` runs: a program generated, a program ran, the vote taken."""

    kind: Literal["generated", "ran", "voted"]
    sample: int | None = None
    attempt: int | None = None
    program: str | None = None
    ok: bool | None = None
    answer: Any = None
    error: AttemptError | None = None
    votes: dict[str, int] | None = None


Emit = Callable[[PALEvent], None]


def resolve_task(task: str, form: Literal["chat", "completion"]) -> FilePrompt:
    """A bundled task name, or a path to the user's own `.jinja` prompt."""
    if task.endswith(".jinja") or "/" in task:
        return load_prompt(Path(task) if task.endswith(".jinja") else task)
    if task not in TASKS:
        raise UsageError(
            f"no PAL task named {task!r}",
            hint=f"use one of {', '.join(TASKS)}, or a path to your own .jinja prompt",
        )
    return load_prompt(f"pal/{form}/{task}")


def _text(output: Any) -> str:
    return output.text if isinstance(output, BaseMessage) else str(output)


class PAL(RunnableSerializable[Any, PALResult]):
    """Program-aided answering as a langchain-core Runnable (`|`, `.batch`, `.stream`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    sandbox: Any
    task: str = "math"
    samples: int = Field(default=1, ge=1, le=64)
    retries: int = Field(default=1, ge=0, le=10)
    temperature: float | None = None
    seed: int | None = None
    backend: str | None = None  # label in results; guessed from the model when None
    budget: Budget | None = None  # default: the model's own (budget_for(model))

    @property
    def form(self) -> Literal["chat", "completion"]:
        return "completion" if isinstance(self.model, BaseLLM) else "chat"

    def prompt(self) -> FilePrompt:
        return resolve_task(self.task, self.form)

    def render(self, question: str) -> PromptValue:
        """The prompt the model gets for `question` (what `--verbose` shows)."""
        return self.prompt().invoke({"question": question})

    # -- Runnable -----------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> PALResult:
        return self._call_with_config(
            lambda q: self._solve(_question(q), None), input, config, run_type="chain"
        )

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Yields `PALEvent`s (generated, ran, voted) as they happen, then the `PALResult`."""
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self._solve(_question(input), events.put)
            except BaseException as exc:
                box["error"] = exc
            events.put(done)

        threading.Thread(target=work, name="llamapipe-pal-stream", daemon=True).start()
        while (item := events.get()) is not done:
            yield item
        if "error" in box:
            raise box["error"]
        yield box["result"]

    # -- the work -------------------------------------------------------------------------

    def _solve(self, question: str, emit: Emit | None) -> PALResult:
        if not question.strip():
            raise UsageError("the question is empty", hint="ask something, e.g. 'What is 6 * 7?'")
        prompt = self.prompt()  # fail on a bad task before any model call
        backend, model_name = describe_model(self.model)
        backend = self.backend or backend
        if self.samples == 1:
            samples = [self._sample(prompt, question, 0, emit)]
        else:
            with ThreadPoolExecutor(self.samples, thread_name_prefix="llamapipe-pal") as pool:
                samples = list(
                    pool.map(lambda i: self._sample(prompt, question, i, emit), range(self.samples))
                )
        attempts = [a for sample in samples for a in sample]
        finals = [sample[-1] for sample in samples if sample[-1].ok]
        votes: Counter[str] = Counter(answer_key(a.answer) for a in finals)
        shown = {answer_key(a.answer): display(a.answer) for a in reversed(finals)}
        vote_table = {shown[k]: n for k, n in votes.most_common()}
        if emit:
            emit(PALEvent(kind="voted", votes=vote_table))
        base: dict[str, Any] = {
            "question": question,
            "task": self.task,
            "backend": backend,
            "model": model_name,
            "unsafe": getattr(self.sandbox, "isolation", "linux") == "unsafe",
        }
        if not finals:
            last = attempts[-1]
            reason = f"{last.error.type}: {last.error.message}" if last.error else "no answer"
            return PALResult(
                **base,
                ok=False,
                program=last.program,
                votes={},
                attempts=attempts,
                error=f"no program succeeded after {len(attempts)} attempt(s); last: {reason}",
            )
        top = max(votes.values())
        winner = next(a for a in finals if votes[answer_key(a.answer)] == top)  # earliest wins ties
        return PALResult(
            **base,
            ok=True,
            answer=winner.answer,
            program=winner.program,
            execution=winner.execution,
            votes=vote_table,
            attempts=attempts,
        )

    def _sample(
        self, prompt: FilePrompt, question: str, index: int, emit: Emit | None
    ) -> list[Attempt]:
        temperature = self.temperature
        if self.samples > 1 and not temperature:
            temperature = SAMPLING_TEMPERATURE
        seed = None if self.seed is None and self.samples == 1 else (self.seed or 0) + index
        model = with_sampling(self.model, temperature=temperature, seed=seed)
        budget = self.budget or budget_for(self.model)
        question_prompt = prompt.invoke({"question": question})
        budget.require(question_prompt, "the PAL prompt with the question")
        failed: list[Failed] = []
        attempts: list[Attempt] = []
        for number in range(self.retries + 1):
            rendered = self._with_history(question_prompt, failed, budget)
            started = time.perf_counter()
            if self.form == "completion":
                reply = _text(model.invoke(rendered.to_string(), stop=COMPLETION_STOP))
            else:
                reply = _text(model.invoke(rendered))
            generation_ms = (time.perf_counter() - started) * 1000
            attempt, feedback = self._attempt(index, number, reply, generation_ms, emit)
            attempts.append(attempt)
            if attempt.ok or number == self.retries:
                break
            failed.append(Failed(reply, attempt.program, feedback))
        return attempts

    def _attempt(
        self, sample: int, number: int, reply: str, generation_ms: float, emit: Emit | None
    ) -> tuple[Attempt, str]:
        prefix = COMPLETION_START if self.form == "completion" else ""
        try:
            program = extract_program(reply, prefix=prefix)
        except NoProgramError as exc:
            missing = AttemptError(type="NoProgram", message=str(exc))
            attempt = Attempt(
                sample=sample,
                attempt=number,
                program=None,
                reply=reply,
                ok=False,
                error=missing,
                generation_ms=round(generation_ms, 1),
            )
            if emit:
                emit(PALEvent(kind="generated", sample=sample, attempt=number, error=missing))
            return attempt, str(exc)
        if emit:
            emit(PALEvent(kind="generated", sample=sample, attempt=number, program=program))
        execution = self.sandbox.run(program)
        error: AttemptError | None = None
        feedback = ""
        if execution.ok and execution.result is None:
            error = AttemptError(type="NoAnswer", message="solution() returned None")
            feedback = "solution() returned None; it must return the answer"
        elif not execution.ok and execution.error is not None:
            error = AttemptError(type=execution.error.type, message=execution.error.message)
            feedback = _feedback(execution)
        attempt = Attempt(
            sample=sample,
            attempt=number,
            program=program,
            reply=reply,
            ok=error is None,
            answer=execution.result if error is None else None,
            error=error,
            killed=execution.killed,
            generation_ms=round(generation_ms, 1),
            sandbox_ms=execution.duration_ms,
            execution=execution,
        )
        if emit:
            emit(
                PALEvent(
                    kind="ran",
                    sample=sample,
                    attempt=number,
                    program=program,
                    ok=attempt.ok,
                    answer=attempt.answer,
                    error=error,
                )
            )
        return attempt, feedback

    def _with_history(
        self, question: PromptValue, failed: list[Failed], budget: Budget
    ) -> PromptValue:
        """The question with as many of the latest failed attempts as fit, oldest left out."""
        for keep in range(len(failed), 0, -1):
            rendered = self._retry_prompt(question, failed[-keep:])
            if budget.fits(rendered):
                return rendered
        return question

    def _retry_prompt(self, question: PromptValue, failed: list[Failed]) -> PromptValue:
        retry = load_prompt(f"pal/{self.form}/retry")
        if isinstance(question, ChatPromptValue):
            messages = list(question.messages)
            for f in failed:
                follow_up = retry.invoke({"error": f.feedback})
                assert isinstance(follow_up, ChatPromptValue)
                messages += [AIMessage(content=f.reply), *follow_up.messages]
            return ChatPromptValue(messages=messages)
        text = question.to_string()
        for f in failed:
            text = retry.invoke(
                {"prompt": text, "program": f.program or f.reply, "error": f.feedback}
            ).to_string()
        return StringPromptValue(text=text)


class Failed(NamedTuple):
    """A failed attempt, as a retry sends it back: the reply, its program, the error."""

    reply: str
    program: str | None
    feedback: str


def _feedback(execution: Any) -> str:
    error = execution.error
    lines = [f"{error.type}: {error.message}"]
    if execution.killed:
        lines.append(f"(the program was stopped: {execution.killed})")
    tail = [line for line in error.traceback.strip().splitlines()[1:] if line.strip()][-6:]
    if tail:
        lines += ["", *tail]
    return "\n".join(lines)


def _question(value: Any) -> str:
    return question_text(value, "PAL", 'pal.invoke("How many ...?")')


def bundled_tasks() -> list[str]:
    """Tasks with prompts in both forms."""
    names = set(list_prompts())
    return [t for t in TASKS if {f"pal/chat/{t}", f"pal/completion/{t}"} <= names]


__all__ = [
    "PAL",
    "TASKS",
    "Attempt",
    "AttemptError",
    "BaseLanguageModel",
    "PALEvent",
    "PALInput",
    "PALResult",
    "bundled_tasks",
    "resolve_task",
]
