"""The document index: SQLite on disk for documents and chunks, BM25 (bm25s) beside it.

- An ingest commits each file in a transaction of its own (pipelines/rag/ingest.py): a
  crash or kill mid-way keeps the files committed before it, and no file half-way.
- A file is identified by its path as ingested and its SHA-256: unchanged files add
  nothing; a changed file replaces only its own chunks; `remove` drops a file.
- The BM25 index is derived data, rebuilt from the stored tokens when the index changes
  and cached on disk per generation (written aside, then renamed into place).
- Dense vectors (an `Embeddings` model, e.g. Ollama's bge-m3) are stored per chunk when
  one is given; `dense_search` ranks by cosine similarity.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import UsageError
from pipelines.rag.ingest import FileStatus, IngestReport, OnFile, OnVectors, walk
from pipelines.rag.tokenize import tokenize

__all__ = ["Chunk", "FileStatus", "Hit", "Index", "IngestReport", "source_name", "walk"]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY, kind TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    text TEXT NOT NULL, pages TEXT NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL REFERENCES documents(source) ON DELETE CASCADE,
    start INTEGER NOT NULL, end INTEGER NOT NULL, page INTEGER, text TEXT NOT NULL,
    tokens TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks(source);
CREATE TABLE IF NOT EXISTS vectors (
    chunk INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE, model TEXT NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (chunk, model));
"""


@dataclass(frozen=True)
class Chunk:
    row: int
    chunk_id: str
    source: str
    start: int
    end: int
    page: int | None
    text: str
    tokens: str = field(default="", repr=False)  # the index tokens, space-separated


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


def source_name(source: str, cwd: Path | None = None) -> str:
    """A source as people read it: relative to the working directory when it is inside it."""
    cwd = cwd or Path.cwd()
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(cwd):
        return str(path.relative_to(cwd))
    return source


class Index:
    """A folder holding one index. Safe for one writer and many readers at a time."""

    def __init__(
        self,
        path: str | Path,
        *,
        embeddings: Any = None,
        embed_model: str | None = None,
        chunk_size: int = 800,
        overlap: int = 120,
        create: bool = True,
        embed_concurrency: int = 1,
    ) -> None:
        """`create=False` opens only an index that exists (readers: a typo in the path must
        not quietly make an empty index). `embed_concurrency`: embedding calls in flight at
        once while ingesting (a served model embeds several batches at once)."""
        self.path = Path(path).expanduser()
        self.embeddings = embeddings
        self.embed_model = embed_model or (type(embeddings).__name__ if embeddings else None)
        self.chunk_size = chunk_size
        self.overlap = overlap
        self.embed_concurrency = embed_concurrency
        self._lock = threading.Lock()
        self._local = threading.local()  # one read connection per thread, opened once
        self._bm25: tuple[int, Any, np.ndarray] | None = None
        self._dense: tuple[int, np.ndarray, np.ndarray] | None = None
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(
                f"{self.path} is a file, not an index folder",
                hint="pass the folder `rag ingest --index` made, or a new folder name",
            )
        if not create and not self.exists_at(self.path):
            raise UsageError(
                f"no index at {self.path}",
                hint=f"make one: llamapipe rag ingest PATH... --index {self.path}",
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot make an index at {self.path}: {exc.strerror}",
                hint="pass a folder you can write to",
            ) from None
        with self._connect() as db:
            db.executescript(SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?), ('generation', '0')",
                           (str(SCHEMA_VERSION),))  # fmt: skip
            elif int(version[0]) != SCHEMA_VERSION:
                raise UsageError(
                    f"{self.path} was made by another llamapipe version (schema {version[0]})",
                    hint="ingest into a new --index folder",
                )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path / "index.sqlite", timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    # -- writing ---------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        on_file: OnFile | None = None,
        on_vectors: OnVectors | None = None,
    ) -> IngestReport:
        """Add new and changed files under `paths`; report every file's fate.

        Each file is committed on its own (pipelines/rag/ingest.py): `on_file` hears of
        each file once its fate is final, an added or updated one right after its commit;
        then `on_vectors(done, total)` of the dense vectors, added in batches.
        """
        from pipelines.rag.ingest import ingest

        return ingest(self, paths, on_file=on_file, on_vectors=on_vectors)

    def _backfill_vectors(self, batch: int = 64) -> int:
        """Vectors for chunks that have none for this embeddings model."""
        from pipelines.rag.ingest import add_vectors

        return add_vectors(self, batch)

    def remove(self, sources: Iterable[str]) -> list[FileStatus]:
        """Drop these sources (as `sources()` lists them, or as paths) and their chunks."""
        out = []
        with self._connect() as db:
            known = {row[0] for row in db.execute("SELECT source FROM documents")}
            db.execute("BEGIN IMMEDIATE")
            for given in sources:
                resolved = str(Path(given).expanduser().resolve())
                source = given if given in known or resolved not in known else resolved
                n = db.execute(
                    "SELECT COUNT(*) FROM chunks WHERE source = ?", (source,)
                ).fetchone()[0]
                gone = db.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount
                status = "removed" if gone else "skipped"
                out.append(FileStatus(source, status, n, None if gone else "not in the index"))
            if any(s.status == "removed" for s in out):
                self._bump(db)
            db.execute("COMMIT")
        return out

    def _checkpoint(self) -> None:
        """Fold the write-ahead log into the database file, so the index is not held twice."""
        with self._connect() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # -- reading ---------------------------------------------------------------------------

    def generation(self) -> int:
        row = self._reader().execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0])

    def sources(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT d.source, d.kind, d.size, d.sha256, d.ingested_at, COUNT(c.id)"
                " FROM documents d LEFT JOIN chunks c ON c.source = d.source"
                " GROUP BY d.source ORDER BY d.source"
            ).fetchall()
        keys = ("source", "kind", "size", "sha256", "ingested_at", "chunks")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    @staticmethod
    def exists_at(path: str | Path) -> bool:
        """Whether `path` holds an index (what readers need before opening one)."""
        return (Path(path).expanduser() / "index.sqlite").exists()

    def document(self, source: str) -> tuple[str, str]:
        """(kind, text) of an indexed document; KeyError for any other name."""
        with self._connect() as db:
            row = db.execute(
                "SELECT kind, text FROM documents WHERE source = ?", (source,)
            ).fetchone()
        if row is None:
            raise KeyError(source)
        return str(row[0]), str(row[1])

    def document_text(self, source: str) -> str:
        return self.document(source)[1]

    def page_at(self, source: str, offset: int) -> int | None:
        """The page (1-based) of a PDF's text that holds `offset`; None for other documents.
        (A chunk may run across pages: a citation's page comes from its own offset.)"""
        row = (
            self._reader()
            .execute("SELECT pages FROM documents WHERE source = ?", (source,))
            .fetchone()
        )
        for page in json.loads(row[0]) if row else []:
            if page["start"] <= offset < page["end"]:
                return int(page["number"])
        return None

    def chunks(self, rows: list[int]) -> dict[int, Chunk]:
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        found = (
            self._reader()
            .execute(
                "SELECT id, chunk_id, source, start, end, page, text, tokens FROM chunks"
                f" WHERE id IN ({marks})",
                rows,
            )
            .fetchall()
        )
        return {r[0]: Chunk(*r) for r in found}

    def search(self, query: str, k: int = 5, terms: list[str] | None = None) -> list[Hit]:
        """BM25 over Korean-aware tokens (`terms`, when the caller has them already); hits
        with no matching token are left out."""
        _, model, row_ids = self._bm25_index()
        terms = tokenize(query) if terms is None else terms
        if model is None or not terms:
            return []
        # Top k among the chunks that match at all: numpy's argpartition over the whole
        # array is slow when most scores are tied at zero, as they are for most queries.
        scores = model.get_scores(terms)
        matching = np.flatnonzero(scores)
        if matching.size > k:
            matching = matching[np.argpartition(scores[matching], -k)[-k:]]
        ranked = matching[np.argsort(-scores[matching], kind="stable")]
        picked = [(int(row_ids[i]), float(scores[i])) for i in ranked]
        found = self.chunks([r for r, _ in picked])
        return [Hit(found[r], s) for r, s in picked if r in found]

    def _bm25_index(self) -> tuple[int, Any, np.ndarray]:
        import bm25s

        generation = self.generation()
        with self._lock:
            if self._bm25 is not None and self._bm25[0] == generation:
                return self._bm25
            cache = self.path / f"bm25-{generation}"
            if (cache / "rows.npy").exists():
                model = bm25s.BM25.load(str(cache), mmap=True)
                row_ids = np.load(cache / "rows.npy")
            else:
                with self._connect() as db:
                    rows = db.execute("SELECT id, tokens FROM chunks ORDER BY id").fetchall()
                row_ids = np.array([r[0] for r in rows], dtype=np.int64)
                model = None
                if rows:
                    model = bm25s.BM25()
                    model.index([r[1].split() for r in rows], show_progress=False)
                    self._save_bm25(model, row_ids, cache)
            self._bm25 = (generation, model, row_ids)
            return self._bm25

    def _save_bm25(self, model: Any, row_ids: np.ndarray, cache: Path) -> None:
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            model.save(str(tmp))
            np.save(tmp / "rows.npy", row_ids)
            os.replace(tmp, cache)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # a reader-only index still works, uncached
            return
        for old in self.path.glob("bm25-*"):
            if old != cache:
                shutil.rmtree(old, ignore_errors=True)

    def dense_search(self, query: str, k: int = 5) -> list[Hit]:
        """Cosine similarity over stored vectors of `embed_model`; empty without one."""
        if self.embeddings is None:
            return []
        generation = self.generation()
        if self._dense is None or self._dense[0] != generation:
            with self._connect() as db:
                rows = db.execute(
                    "SELECT chunk, vector FROM vectors WHERE model = ? ORDER BY chunk",
                    (self.embed_model,),
                ).fetchall()
            if not rows:
                return []
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12
            self._dense = (generation, ids, matrix)
        _, ids, matrix = self._dense
        vec = np.asarray(self.embeddings.embed_query(query), dtype=np.float32)
        sims = matrix @ (vec / (np.linalg.norm(vec) + 1e-12))
        top = np.argsort(-sims)[:k]
        found = self.chunks([int(ids[i]) for i in top])
        return [Hit(found[int(ids[i])], float(sims[i])) for i in top if int(ids[i]) in found]
