"""Open the index a setting names, with dense vectors when an embeddings model is there."""

from __future__ import annotations

from pathlib import Path

from pipelines.rag.index import Index
from pipelines.settings import Settings


def open_index(
    settings: Settings, path: Path | None = None, *, dense: bool = False, create: bool = False
) -> tuple[Index, str]:
    """(the index at `path`, default <data_dir>/index; how retrieval will work, in words).

    With `dense`, and an embeddings model available, vectors are used too. Only ingesting
    creates an index: elsewhere a mistyped path is an error, not a new empty index."""
    from pipelines.backends import load_embeddings

    embeddings, name, why = None, None, "BM25 only"
    if dense:
        embeddings, name, why = load_embeddings(settings)
    calls = 1
    if embeddings is not None:
        from pipelines.backends.describe import describe_model
        from pipelines.pool import default_concurrency

        calls = settings.concurrency or default_concurrency(describe_model(embeddings)[0])
    index = Index(
        path or settings.data_dir / "index",
        embeddings=embeddings,
        embed_model=name,
        create=create,
        embed_concurrency=calls,
    )
    return index, why
