"""A content-addressed cache of model outputs: the same call is never made twice.

The key is a hash of everything that decides the output: backend, model, the rendered
prompt, the generation parameters and the input. SQLite (WAL) makes each write atomic,
so a run killed at any point keeps every output it had received.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    ).hexdigest()


class OutputCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL,"
                " created REAL NOT NULL, meta TEXT NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def get(self, key: str) -> str | None:
        entry = self.entry(key)
        return None if entry is None else entry[0]

    def entry(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """(output, the metadata it was stored with)."""
        row = (
            self._db().execute("SELECT output, meta FROM outputs WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else (str(row[0]), json.loads(row[1]))

    def put(self, key: str, output: str, **meta: Any) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
            (key, output, time.time(), json.dumps(meta, ensure_ascii=False, default=str)),
        )
