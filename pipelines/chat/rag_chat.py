"""RAG chat: follow-up questions against your documents.

A follow-up ("그럼 그건 누가 만들었어?") means nothing to a retriever on its own, so each turn
after the first is rewritten into a standalone question from the conversation (the
`chat/rewrite` prompt), and that question is retrieved and answered exactly as `rag ask`
answers: numbered sources, every citation checked, abstention when nothing relevant is found,
documents fenced so their instructions cannot steer the model. The rewritten question is
kept in the saved turn (`meta.question`) and shown with `--verbose`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.runnables import RunnableSerializable
from pydantic import BaseModel, ConfigDict

from pipelines.budget import budget_for
from pipelines.chat.conversation import ChatTurn, as_turn
from pipelines.chat.store import Message, SessionStore
from pipelines.rag.pipeline import RAG, RAGAnswer
from pipelines.streaming import StreamThenResult, model_text
from prompts import load_prompt

REWRITE_PROMPT = "chat/rewrite"
MAX_GROWTH = 4  # a rewrite longer than this many times the question (+200 chars) is a ramble


class RAGChatReply(BaseModel):
    session: str
    message: str  # as the user typed it
    question: str  # the standalone question that was retrieved and answered
    rewritten: bool
    answer: RAGAnswer


class RAGConversation(StreamThenResult, RunnableSerializable[Any, RAGChatReply]):
    """Multi-turn RAG over saved sessions: rewrite, retrieve, answer, check, save.

    `stream` yields the standalone question first (a `Rewritten`, a str subclass), then the
    answer's text as it is generated, then the `RAGChatReply`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rag: RAG
    store: SessionStore
    rewrite_prompt: str = REWRITE_PROMPT

    def standalone(self, turn: ChatTurn) -> tuple[str, bool]:
        """(the question to retrieve with, whether it was rewritten)."""
        history = [m for m in self.store.messages(turn.session) if m.content.strip()]
        if not history:
            return turn.message.strip(), False
        template = load_prompt(self.rewrite_prompt)
        budget = budget_for(self.rag.model)

        def render(kept: list[Message]) -> Any:
            turns = [{"role": m.role, "content": m.content} for m in kept]
            return template.invoke({"history": turns, "question": turn.message})

        start = 0
        while start < len(history) - 1 and not budget.fits(render(history[start:])):
            start += 1
        text = "".join(model_text(self.rag.model, render(history[start:]), stream=False))
        question = _first_line(text)
        limit = MAX_GROWTH * len(turn.message) + 200
        if not question or len(question) > limit:
            return turn.message.strip(), False  # a failed rewrite: ask as typed
        return question, question != turn.message.strip()

    def _parse(self, value: Any) -> Any:
        return as_turn(value)

    def _run(self, turn: ChatTurn, *, stream: bool) -> Iterator[Any]:
        question, rewritten = self.standalone(turn)
        yield Rewritten(question)
        answer: RAGAnswer | None = None
        for item in self.rag.stream(question) if stream else [self.rag.invoke(question)]:
            if isinstance(item, RAGAnswer):
                answer = item
            else:
                yield item
        assert answer is not None
        meta = {
            "model": answer.model, "question": question, "abstained": answer.abstained,
            "citations": [c.model_dump() for c in answer.citations],
        }  # fmt: skip
        self.store.append(
            turn.session, Message("user", turn.message), Message("assistant", answer.answer, meta)
        )
        yield RAGChatReply(
            session=turn.session, message=turn.message, question=question, rewritten=rewritten,
            answer=answer,
        )  # fmt: skip


class Rewritten(str):
    """The standalone question, as `stream` announces it before the answer's text."""


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip().strip("\"'“”`").strip()
        for prefix in ("Rewritten question:", "Question:", "질문:"):
            if line.lower().startswith(prefix.lower()):
                line = line[len(prefix) :].strip()
        if line:
            return line
    return ""
