"""Adding files to an index: one SQLite transaction per file, then dense vectors in batches.

- Files are read, chunked and tokenised one at a time, and each file's rows are committed
  in a transaction of its own: an interrupt keeps every file committed before it, and no
  file is ever in the index half-way (its old chunks stay until its new ones commit).
- `on_file` hears of each file once its fate is final: skipped and unchanged ones as they
  are read, added and updated ones right after their commit. In the main thread a Ctrl-C
  is held back from the commit until `on_file` has heard of it, so what a caller printed
  is what the index holds.
- Dense vectors (when the index has an embeddings model) are added after the files, in
  batches, each batch committed as it comes back; `on_vectors(done, total)` hears of each.
  Chunks an interrupt leaves without vectors are found and embedded by the next ingest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.pool import bounded
from pipelines.rag.chunking import chunk_spans
from pipelines.rag.documents import BadDocument, LoadedDocument, Walked, load_document, walk_all
from pipelines.rag.tokenize import tokenize_many

if TYPE_CHECKING:
    from pipelines.rag.index import Index

OnFile = Callable[["FileStatus"], None]
OnVectors = Callable[[int, int], None]


@dataclass
class FileStatus:
    source: str
    status: str  # added | updated | unchanged | skipped | removed
    chunks: int = 0
    reason: str | None = None


@dataclass
class IngestReport:
    files: list[FileStatus] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0
    unsupported: list[str] = field(default_factory=list)  # files of no supported type
    vectors_added: int = 0

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def chunks_added(self) -> int:
        return sum(f.chunks for f in self.files if f.status in ("added", "updated"))

    def to_json(self) -> dict[str, Any]:
        totals = {s: self.count(s) for s in ("added", "updated", "unchanged", "skipped")}
        return {
            "files": [f.__dict__ for f in self.files],
            "totals": {**totals, "chunks_added": self.chunks_added},
            "seconds": round(self.seconds, 3),
            "unsupported": list(self.unsupported),
        }


def walk(paths: Iterable[str | Path]) -> tuple[list[tuple[str, Path]], list[FileStatus]]:
    """(source, path) for every supported file under `paths`; problems as statuses.

    A source is the file's absolute, resolved path: the same file ingested from another
    working directory, or through a symlink, is the same source (`source_name` shows it
    relative to the working directory where that reads better). Unsupported files inside
    folders are no problem here (`walk_all` lists them).
    """
    return _split(walk_all(paths))


def _split(walked: Walked) -> tuple[list[tuple[str, Path]], list[FileStatus]]:
    found = [(str(path.resolve()), path) for path in walked.files]
    problems = [
        FileStatus(str(path), "skipped", reason=f"unsupported type {path.suffix}")
        for path in walked.given_unsupported
    ] + [FileStatus(given, "skipped", reason="no such file or folder") for given in walked.missing]
    return found, problems


def ingest(
    index: Index,
    paths: Iterable[str | Path],
    on_file: OnFile | None = None,
    on_vectors: OnVectors | None = None,
) -> IngestReport:
    """Add new and changed files under `paths` to `index`, each committed on its own."""
    started = time.perf_counter()
    report = IngestReport()
    walked = walk_all(paths)
    report.unsupported = [str(p.resolve()) for p in walked.unsupported]
    found, problems = _split(walked)
    for problem in problems:
        report.files.append(problem)
        if on_file:
            on_file(problem)
    db = index._connect()  # one connection for the files' transactions
    try:
        known = dict(db.execute("SELECT source, sha256 FROM documents").fetchall())
        committed = _ingest_files(index, db, found, known, report, on_file)
    finally:
        db.close()
    if index.embeddings is not None:
        report.vectors_added = add_vectors(index, on_vectors=on_vectors)
    if committed:
        index._checkpoint()
    report.seconds = time.perf_counter() - started
    return report


def _ingest_files(
    index: Index,
    db: sqlite3.Connection,
    found: list[tuple[str, Path]],
    known: dict[str, str],
    report: IngestReport,
    on_file: OnFile | None,
) -> int:
    """Read, chunk, tokenise and commit each file in turn; how many were committed."""
    committed = 0
    for source, path in found:
        status = FileStatus(source, "added")
        doc: LoadedDocument | None = None
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if known.get(source) == digest:
                status.status = "unchanged"
            else:
                doc = load_document(path, source)
                report.bytes_read += doc.size
                status.status = "updated" if source in known else "added"
        except BadDocument as exc:
            status.status, status.reason = "skipped", str(exc)
        except OSError as exc:
            status.status, status.reason = "skipped", exc.strerror or str(exc)
        if doc is None:
            report.files.append(status)
            if on_file:
                on_file(status)
            continue
        spans = chunk_spans(doc.text, index.chunk_size, index.overlap)
        status.chunks = len(spans)
        rows = _rows(doc, spans)
        with _sigint_held():
            _commit(index, db, doc, rows)
            committed += 1
            report.files.append(status)
            if on_file:
                on_file(status)
    return committed


def _rows(doc: LoadedDocument, spans: list[tuple[int, int]]) -> list[tuple[Any, ...]]:
    """The file's chunk rows, tokens included (the slow part for Korean), before any lock."""
    rows: list[tuple[Any, ...]] = []
    texts = [doc.text[start:end] for start, end in spans]
    for (start, end), text, tokens in zip(spans, texts, tokenize_many(texts), strict=True):
        chunk_id = hashlib.sha256(
            f"{doc.source}\0{doc.sha256}\0{start}\0{end}".encode()
        ).hexdigest()[:16]
        rows.append((chunk_id, doc.source, start, end, doc.page_at(start), text, " ".join(tokens)))
    return rows


def _commit(
    index: Index, db: sqlite3.Connection, doc: LoadedDocument, rows: list[tuple[Any, ...]]
) -> None:
    """One file in one transaction: its old chunks (if any) out, its new ones in."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("DELETE FROM documents WHERE source = ?", (doc.source,))
        db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc.source, doc.kind, doc.sha256, doc.size, doc.text,
             json.dumps([p.__dict__ for p in doc.pages]), time.time()),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO chunks (chunk_id, source, start, end, page, text, tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        index._bump(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def missing_vectors(index: Index) -> list[tuple[int, str]]:
    """(row, text) of the chunks that have no vector for the index's embeddings model."""
    with index._connect() as db:
        return db.execute(
            "SELECT c.id, c.text FROM chunks c LEFT JOIN vectors v"
            " ON v.chunk = c.id AND v.model = ? WHERE v.chunk IS NULL ORDER BY c.id",
            (index.embed_model,),
        ).fetchall()


def add_vectors(index: Index, batch: int = 64, on_vectors: OnVectors | None = None) -> int:
    """Vectors for chunks that have none for this embeddings model (just ingested, or
    before dense retrieval was available). Returns how many were added."""
    missing = missing_vectors(index)
    embeddings = index.embeddings
    batches = [missing[i : i + batch] for i in range(0, len(missing), batch)]
    if on_vectors and missing:
        on_vectors(0, len(missing))

    def embed(part: list[tuple[int, str]]) -> list[list[float]]:
        return embeddings.embed_documents([text for _, text in part])

    added = 0
    # Batches are embedded concurrently; each is written here, in this thread, as it
    # comes back, so an interrupt keeps every batch written so far.
    for part, vectors in bounded(embed, batches, index.embed_concurrency):
        with index._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)",
                [(row, index.embed_model, np.asarray(v, dtype=np.float32).tobytes())
                 for (row, _), v in zip(part, vectors, strict=True)],
            )  # fmt: skip
            index._bump(db)
            db.execute("COMMIT")
        added += len(part)
        if on_vectors:
            on_vectors(added, len(missing))
    return added


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """In the main thread, a Ctrl-C during the block takes effect when it ends: a file's
    commit and the caller hearing of it go together. Elsewhere (no signals) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[Any] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])  # the CLI's handler (or Python's) raises KeyboardInterrupt
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt
