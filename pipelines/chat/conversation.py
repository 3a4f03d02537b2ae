"""A conversation that remembers: each turn sees the earlier ones of its session.

    chat = Conversation(model=backend.chat, store=SessionStore.in_data_dir(data_dir))
    chat.invoke({"session": "trip", "message": "경주에 가 볼 만한 곳은?"}).answer
    chat.invoke({"session": "trip", "message": "그럼 거기까지 어떻게 가?"})   # remembers

History is kept within the model's context window: the oldest turns are left out of the
prompt first (whole turns, user and answer together), the system prompt and the new message
never; every turn stays saved. `stream` yields the answer's text as it comes, then the
`ChatReply`. An answer stopped by Ctrl-C is saved as far as it got, marked as stopped.

For chains of your own, `SessionHistory` is the same store as LangChain's
`BaseChatMessageHistory`, for `RunnableWithMessageHistory`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableSerializable
from pydantic import BaseModel, ConfigDict, Field

from pipelines.backends.describe import describe_model
from pipelines.budget import Budget, budget_for
from pipelines.chat.store import Message, SessionStore
from pipelines.errors import UsageError
from pipelines.streaming import StreamThenResult, model_text
from prompts import load_prompt

PROMPT = "chat/conversation"


class ChatTurn(BaseModel):
    session: str = Field(min_length=1)
    message: str
    system: str | None = None  # replaces the session's system prompt from this turn on


class ChatReply(BaseModel):
    session: str
    message: str
    answer: str
    history_used: int  # earlier messages the prompt held
    history_left_out: int  # earlier messages left out to fit the window
    stopped: bool = False  # Ctrl-C stopped the answer; what came is kept
    backend: str
    model: str


class Conversation(StreamThenResult, RunnableSerializable[Any, ChatReply]):
    """Multi-turn chat over saved sessions, with any chat or completion model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    store: SessionStore
    budget: Budget | None = None  # default: the model's own (budget_for(model))
    prompt_name: str = PROMPT

    def prompt(self, turn: ChatTurn) -> tuple[PromptValue, int, int]:
        """(prompt, earlier messages held, left out): the newest turns that fit."""
        if not turn.message.strip():
            raise UsageError("the message is empty", hint="type something, or /exit")
        template = load_prompt(self.prompt_name)
        system = turn.system if turn.system is not None else self.store.system(turn.session)
        history = [m for m in self.store.messages(turn.session) if m.content.strip()]
        budget = self.budget or budget_for(self.model)

        def render(kept: Sequence[Message]) -> PromptValue:
            turns = [{"role": m.role, "content": m.content} for m in kept]
            return template.invoke({"system": system, "history": turns, "prompt": turn.message})

        budget.require(render([]), "the message with the system prompt")
        start = 0
        while start < len(history) and not budget.fits(render(history[start:])):
            start += 1
            while start < len(history) and history[start].role != "user":
                start += 1  # whole turns: never open on an answer
        return render(history[start:]), len(history) - start, start

    def _parse(self, value: Any) -> Any:
        return as_turn(value)

    def _run(self, turn: ChatTurn, *, stream: bool) -> Iterator[Any]:
        if turn.system is not None:
            self.store.set_system(turn.session, turn.system)
        prompt, used, left_out = self.prompt(turn)
        backend, model_name = describe_model(self.model)
        parts: list[str] = []
        stopped = completed = False
        try:
            for text in model_text(self.model, prompt, stream=stream):
                parts.append(text)
                if stream:
                    yield text
            completed = True
        except (KeyboardInterrupt, GeneratorExit):
            stopped = True
            raise
        finally:
            # Saved whole, or an interrupted answer as far as it got; a failed call not at
            # all (the user can ask again).
            answer = "".join(parts).strip()
            if completed or (stopped and answer):
                meta = {"model": model_name, **({"stopped": True} if stopped else {})}
                self.store.append(
                    turn.session,
                    Message("user", turn.message),
                    Message("assistant", answer, meta),
                )
        yield ChatReply(
            session=turn.session, message=turn.message, answer=answer, history_used=used,
            history_left_out=left_out, stopped=stopped, backend=backend, model=model_name,
        )  # fmt: skip


def as_turn(value: Any) -> ChatTurn:
    if isinstance(value, ChatTurn):
        return value
    if isinstance(value, dict):
        return ChatTurn.model_validate(value)
    raise UsageError(
        "a conversation takes {'session': NAME, 'message': TEXT}",
        hint="or a ChatTurn(session=..., message=...)",
    )


class SessionHistory(BaseChatMessageHistory):
    """A saved session as LangChain's chat message history (for RunnableWithMessageHistory):
    `RunnableWithMessageHistory(chain, lambda sid: SessionHistory(store, sid), ...)`."""

    def __init__(self, store: SessionStore, session: str) -> None:
        self.store = store
        self.session = store.open(session)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [
            HumanMessage(m.content) if m.role == "user" else AIMessage(m.content)
            for m in self.store.messages(self.session)
        ]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        saved = []
        for message in messages:
            if isinstance(message, HumanMessage):
                saved.append(Message("user", message.text))
            elif isinstance(message, AIMessage):
                saved.append(Message("assistant", message.text))
        if saved:
            self.store.append(self.session, *saved)

    def clear(self) -> None:
        self.store.clear(self.session)
