"""Slow stand-ins for the progress and interrupt tests: a slow disk, slow embeddings, a
model slow to answer. Each is installed in the CLI's own process (a driver script calls
these before `cli.entry()`), so a test can watch and interrupt real long work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.fakes import ScriptedChat, WordEmbeddings

EMBED_MODEL = "slow-words"


def slow_files(seconds: float, marks: Path | None = None) -> None:
    """Reading each document takes `seconds` longer (a slow disk, a big PDF); with `marks`,
    files `marks/reading-N` and `marks/N` appear as the Nth document starts and is read
    (for a test to time a signal)."""
    from pipelines.rag import ingest

    real = ingest.load_document
    count = 0

    def load(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        if marks is not None:
            marks.mkdir(parents=True, exist_ok=True)
            (marks / f"reading-{count + 1}").touch()
        time.sleep(seconds)
        doc = real(*args, **kwargs)
        count += 1
        if marks is not None:
            marks.mkdir(parents=True, exist_ok=True)
            (marks / str(count)).touch()
        return doc

    ingest.load_document = load  # type: ignore[assignment]


class SlowEmbeddings(WordEmbeddings):
    """Word vectors that take `delay` seconds per batch; with `marks`, a file
    `marks/embed-N` appears once the Nth batch is done."""

    def __init__(self, delay: float, marks: Path | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.marks = marks

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        time.sleep(self.delay)
        vectors = super().embed_documents(texts)
        if self.marks is not None:
            self.marks.mkdir(parents=True, exist_ok=True)
            (self.marks / f"embed-{self.calls}").touch()
        return vectors


def use_scripted(
    reply: str = "hello",
    *,
    first_delay: float = 0.0,
    chunk_delay: float = 0.0,
    embed_delay: float | None = None,
    marks: Path | None = None,
) -> None:
    """The scripted model as backend `scripted`: it thinks `first_delay` s before its first
    word, then streams `reply`; with `embed_delay`, it has slow embeddings for dense
    retrieval too."""
    import dataclasses
    import os

    from pipelines.backends import REGISTRY
    from tests.scripted_backend import NAME, scripted_provider

    def answer(prompt: str) -> str:
        time.sleep(first_delay)
        return reply

    provider = scripted_provider(ScriptedChat(answer, chunk_delay=chunk_delay))
    if embed_delay is not None:
        found = (SlowEmbeddings(embed_delay, marks), EMBED_MODEL, "slow test embeddings")
        provider = dataclasses.replace(provider, embeddings=lambda settings: found)
    REGISTRY.register(provider)
    os.environ["LLAMAPIPE_BACKEND"] = NAME
