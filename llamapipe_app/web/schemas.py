"""The HTTP API's request and response bodies (pydantic: they are its OpenAPI schemas)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_TEXT = 20_000  # characters in one message or question


class Problem(BaseModel):
    """Every error: what is wrong, and what to do."""

    error: str
    hint: str = ""


class Health(BaseModel):
    ok: bool
    version: str
    index: str
    index_ready: bool  # an index exists there (else: `llamapipe rag ingest PATH --index DIR`)
    model: str | None  # None until the first call loads it
    token_required: bool


class ChatRequest(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_TEXT)
    session: str | None = Field(
        default=None, max_length=100, description="A saved session to continue; none: a new one."
    )
    rag: bool = Field(default=False, description="Answer from the indexed documents.")
    k: int = Field(default=5, ge=1, le=50, description="Passages to retrieve (rag).")


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_TEXT)
    k: int = Field(default=5, ge=1, le=50)


class PALRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_TEXT)
    session: str | None = Field(
        default=None, max_length=100, description="Save the question and answer in this session."
    )


class PALAnswer(BaseModel):
    """As `pal ask --json`, with the question and the session it was saved in."""

    question: str
    answer: Any
    program: str | None
    ok: bool
    votes: dict[str, int]
    attempts: list[dict[str, Any]]
    backend: str
    model: str
    error: str | None = None
    session: str | None = None  # where the turn was saved
    unsafe: bool = Field(
        default=False, description="The program ran without OS walls (sandbox_isolation unsafe)."
    )


class SessionSummary(BaseModel):
    name: str
    system: str
    messages: int
    created: float
    updated: float
    first: str


class SessionMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str
    meta: dict[str, Any] = Field(default_factory=dict)


class SessionDetail(BaseModel):
    name: str
    system: str
    messages: list[SessionMessage]


class Deleted(BaseModel):
    deleted: int


class SourceInfo(BaseModel):
    source: str
    kind: str
    size: int
    chunks: int
    ingested_at: float | str | None = None


class SourceList(BaseModel):
    index: str
    sources: list[SourceInfo]


class SourceText(BaseModel):
    source: str
    kind: str
    text: str  # citations' start and end are offsets into this text


class EvalRun(BaseModel):
    run_id: str
    spec: str
    finished: float
    systems: dict[str, dict[str, float]]
    report: str  # the URL of its HTML report


class EvalRuns(BaseModel):
    runs: list[EvalRun]
