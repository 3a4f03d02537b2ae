"""The HTTP API under /api: the pipelines (streamed as server-sent events), saved sessions,
the indexed documents and eval runs. Every error body is a `Problem`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from llamapipe_app.web.schemas import (
    AskRequest,
    ChatRequest,
    Deleted,
    EvalRun,
    EvalRuns,
    Health,
    PALAnswer,
    PALRequest,
    Problem,
    SessionDetail,
    SessionMessage,
    SessionSummary,
    SourceInfo,
    SourceList,
    SourceText,
)
from llamapipe_app.web.services import Services
from llamapipe_app.web.sse import event, stream_events
from pipelines import __version__
from pipelines.errors import LlamapipeError

router = APIRouter(prefix="/api", responses={400: {"model": Problem}, 503: {"model": Problem}})

STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Server-sent events: `token` {text} as the answer is written, then the "
        "result event, or `error` {error, hint}; `done` last.",
    }
}


def services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]


@router.get("/health", tags=["server"])
def health(svc: Svc) -> Health:
    backend = svc.backend
    return Health(
        ok=True,
        version=__version__,
        index=str(svc.index_path),
        index_ready=svc.index_ready,
        model=None if backend is None else f"{backend.name}: {backend.model}",
        token_required=svc.token_required,
    )


# -- pipelines --------------------------------------------------------------------------------


@router.post("/chat", tags=["pipelines"], response_class=StreamingResponse, responses=STREAMED)
def chat(body: ChatRequest, svc: Svc) -> StreamingResponse:
    """A chat turn in a saved session (a new one when none is named), answered from the
    indexed documents with `rag`. Events: `session` {session}; with `rag`, `question`
    {question, rewritten} (the follow-up made standalone); `token`s; `reply` (as
    `chat --json` gives each turn)."""
    from pipelines.chat import ChatReply, ChatTurn, RAGChatReply, Rewritten

    store = svc.store()
    index = svc.index() if body.rag else None  # before the stream: a missing index is a 400
    conversation = svc.toolkit.conversation(index=index, k=body.k)
    fresh = not (body.session and store.exists(body.session))
    name = store.open(body.session) if body.session else store.create()

    def events() -> Iterator[str]:
        yield event("session", {"session": name})
        try:
            yield from turn_events()
        except LlamapipeError:
            if fresh and not store.messages(name):
                store.delete(name)  # a first turn that failed leaves no empty session
            raise

    def turn_events() -> Iterator[str]:
        turn = ChatTurn(session=name, message=body.message)
        for item in conversation.stream(turn):
            if isinstance(item, ChatReply):
                yield event("reply", item.model_dump())
            elif isinstance(item, RAGChatReply):
                doc = item.model_dump(exclude={"answer"})
                doc["answer"] = item.answer.to_json()
                yield event("reply", doc)
            elif isinstance(item, Rewritten):  # the follow-up, made standalone
                rewritten = str(item) != body.message.strip()
                yield event("question", {"question": str(item), "rewritten": rewritten})
            elif item:
                yield event("token", {"text": item})

    return stream_events(events)


@router.post("/rag/ask", tags=["pipelines"], response_class=StreamingResponse, responses=STREAMED)
def rag_ask(body: AskRequest, svc: Svc) -> StreamingResponse:
    """An answer from the indexed documents. Events: `token`s, then `answer` (as `rag ask
    --json`: the checked answer, its citations with offsets into their sources, and the
    retrieved passages)."""
    from pipelines.rag import RAGAnswer

    rag = svc.toolkit.rag(k=body.k, index=svc.index())

    def events() -> Iterator[str]:
        for item in rag.stream(body.question):
            if isinstance(item, RAGAnswer):
                yield event("answer", {"question": body.question, **item.to_json()})
            elif item:
                yield event("token", {"text": item})

    return stream_events(events)


@router.post("/pal/ask", tags=["pipelines"])
def pal_ask(body: PALRequest, svc: Svc) -> PALAnswer:
    """The model writes a program, the sandbox runs it: the answer and the program (as `pal
    ask --json`), `unsafe` when the sandbox runs without OS walls. The question and answer
    join the session named, or a new one when none is (as a chat turn does); a question that
    fails before an answer leaves no session behind."""
    kit = svc.toolkit
    result = kit.pal().invoke(body.question)
    store = kit.store()
    name = store.open(body.session) if body.session else store.create()
    kit.save_pal_turn(name, body.question, result)
    doc = {"unsafe": kit.settings.sandbox_isolation == "unsafe", **result.to_json()}
    return PALAnswer(question=body.question, session=name, **doc)


# -- sessions ---------------------------------------------------------------------------------


@router.get("/sessions", tags=["sessions"])
def list_sessions(svc: Svc) -> list[SessionSummary]:
    """Saved sessions, most recently used first."""
    return [SessionSummary(**s.to_json()) for s in svc.store().sessions()]


@router.get("/sessions/{name}", tags=["sessions"], responses={404: {"model": Problem}})
def read_session(name: str, svc: Svc) -> SessionDetail:
    store = svc.store()
    if not store.exists(name):
        raise HTTPException(404, f"no session named {name!r}")
    messages = [SessionMessage(**m.to_json()) for m in store.messages(name)]
    return SessionDetail(name=name, system=store.system(name), messages=messages)


@router.delete("/sessions/{name}", tags=["sessions"], responses={404: {"model": Problem}})
def delete_session(name: str, svc: Svc) -> Deleted:
    store = svc.store()
    if not store.exists(name):
        raise HTTPException(404, f"no session named {name!r}")
    return Deleted(deleted=store.delete(name))


# -- sources ----------------------------------------------------------------------------------


@router.get("/sources", tags=["documents"])
def list_sources(svc: Svc) -> SourceList:
    """The indexed documents."""
    index = svc.index()
    return SourceList(index=str(index.path), sources=[SourceInfo(**r) for r in index.sources()])


@router.get("/sources/text", tags=["documents"], responses={404: {"model": Problem}})
def source_text(source: Annotated[str, Query(max_length=4096)], svc: Svc) -> SourceText:
    """The text of one indexed document, as the index holds it (what citations' offsets
    point into). Only indexed documents are served: the name is looked up, never opened."""
    try:
        kind, text = svc.index().document(source)
    except KeyError:
        raise HTTPException(404, f"{source!r} is not an indexed document") from None
    return SourceText(source=source, kind=kind, text=text)


# -- eval runs --------------------------------------------------------------------------------


@router.get("/evals/runs", tags=["evals"])
def eval_runs(svc: Svc) -> EvalRuns:
    """Finished eval runs in <data_dir>/evals, newest first, each with its report's URL."""
    from evals.history import load_history

    runs = [
        EvalRun(
            run_id=r["run_id"],
            spec=r["spec"],
            finished=r["finished"],
            systems=r["systems"],
            report=f"/evals/runs/{quote(r['run_id'])}",
        )
        for r in reversed(load_history(svc.evals_dir))
    ]
    return EvalRuns(runs=runs)


@router.get("/evals/runs/{run_id}", tags=["evals"], responses={404: {"model": Problem}})
def eval_run(run_id: str, svc: Svc) -> dict[str, Any]:
    """One run's summary (its `summary.json`)."""
    path = known_run(svc, run_id) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def known_run(svc: Services, run_id: str) -> Any:
    """The folder of a run the history lists; a 404 for any other name."""
    from evals.history import load_history

    if run_id not in {r["run_id"] for r in load_history(svc.evals_dir)}:
        raise HTTPException(404, f"no eval run {run_id!r}")
    return svc.evals_dir / run_id
