"""Saved conversations: one SQLite file in the data dir (`<data_dir>/sessions.sqlite`).

A session has a unique name, an optional system prompt, and its messages in order, each
with a role (`user` | `assistant`), its text, and details as JSON (the model, a RAG
chat's rewritten question, an answer stopped by Ctrl-C). Several processes may read and
write at once (WAL, short transactions), so a second terminal can list what the first saves.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.errors import UsageError

Role = Literal["user", "assistant"]
FILE = "sessions.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    system TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session, id);
"""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": self.content,
            **({"meta": self.meta} if self.meta else {}),
        }


@dataclass(frozen=True)
class SessionInfo:
    name: str
    system: str
    created: float
    updated: float
    messages: int
    first: str  # the first user message, for listings

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "system": self.system, "messages": self.messages,
            "created": self.created, "updated": self.updated, "first": self.first,
        }  # fmt: skip


class SessionStore:
    """The saved conversations in one SQLite file; safe from several threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(
                f"cannot open the sessions file {self.path}: {exc}",
                hint="check the permissions of the data dir (LLAMAPIPE_DATA_DIR)",
            ) from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SessionStore:
        return cls(data_dir / FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        yield db

    # -- sessions ---------------------------------------------------------------------------

    def create(self, name: str | None = None, system: str = "") -> str:
        """A new session; without a name, one from the clock (`chat-20261130-083512`)."""
        now = time.time()
        base = name or time.strftime("chat-%Y%m%d-%H%M%S", time.localtime(now))
        candidate, n = base, 1
        with self._connect() as db:
            while True:
                try:
                    db.execute(
                        "INSERT INTO sessions (name, system, created, updated) VALUES (?, ?, ?, ?)",
                        (candidate, system, now, now),
                    )
                    return candidate
                except sqlite3.IntegrityError:
                    if name is not None:
                        raise UsageError(
                            f"a session named {name!r} exists already",
                            hint="continue it with --session, or choose another name",
                        ) from None
                    n += 1
                    candidate = f"{base}-{n}"

    def exists(self, name: str) -> bool:
        with self._connect() as db:
            return (
                db.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone() is not None
            )

    def open(self, name: str, system: str | None = None) -> str:
        """The session `name`, made if it does not exist; `system` replaces its system prompt."""
        if not self.exists(name):
            return self.create(name, system or "")
        if system is not None:
            self.set_system(name, system)
        return name

    def last(self) -> str | None:
        """The most recently used session that has turns, for `--continue`."""
        with self._connect() as db:
            row = db.execute(
                "SELECT name FROM sessions s"
                " WHERE EXISTS (SELECT 1 FROM messages WHERE session = s.id)"
                " ORDER BY updated DESC, id DESC LIMIT 1"
            ).fetchone()
        return row[0] if row else None

    def system(self, name: str) -> str:
        with self._connect() as db:
            row = db.execute("SELECT system FROM sessions WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise self._missing(name)
        return str(row[0])

    def set_system(self, name: str, system: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE sessions SET system = ?, updated = ? WHERE name = ?",
                (system, time.time(), name),
            )

    def rename(self, old: str, new: str) -> None:
        with self._connect() as db:
            try:
                done = db.execute("UPDATE sessions SET name = ? WHERE name = ?", (new, old))
            except sqlite3.IntegrityError:
                raise UsageError(
                    f"a session named {new!r} exists already", hint="choose another name"
                ) from None
        if done.rowcount == 0:
            raise self._missing(old)

    def delete(self, name: str) -> int:
        """Remove the session and its messages; how many messages went with it."""
        with self._connect() as db:
            row = db.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._missing(name)
            count = db.execute("SELECT COUNT(*) FROM messages WHERE session = ?", row).fetchone()
            db.execute("DELETE FROM sessions WHERE id = ?", row)
        return int(count[0])

    def sessions(self) -> list[SessionInfo]:
        """Every session, most recently used first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT s.name, s.system, s.created, s.updated, COUNT(m.id),"
                " (SELECT content FROM messages WHERE session = s.id AND role = 'user'"
                "  ORDER BY id LIMIT 1)"
                " FROM sessions s LEFT JOIN messages m ON m.session = s.id"
                " GROUP BY s.id ORDER BY s.updated DESC, s.id DESC"
            ).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3], r[4], r[5] or "") for r in rows]

    # -- messages ---------------------------------------------------------------------------

    def messages(self, name: str) -> list[Message]:
        with self._connect() as db:
            row = db.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._missing(name)
            rows = db.execute(
                "SELECT role, content, meta, created FROM messages WHERE session = ? ORDER BY id",
                row,
            ).fetchall()
        return [Message(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def append(self, name: str, *messages: Message) -> None:
        """Add messages at the end, together (a turn is saved whole or not at all)."""
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise self._missing(name)
                db.executemany(
                    "INSERT INTO messages (session, role, content, meta, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(row[0], m.role, m.content, json.dumps(m.meta, ensure_ascii=False),
                      m.created or now) for m in messages],
                )  # fmt: skip
                db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, row[0]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def clear(self, name: str) -> None:
        """Forget the messages (the REPL's /reset), keep the session and its system prompt."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM messages WHERE session = (SELECT id FROM sessions WHERE name = ?)",
                (name,),
            )

    def _missing(self, name: str) -> UsageError:
        known = [s.name for s in self.sessions()[:5]]
        listed = f"; recent ones: {', '.join(known)}" if known else "; there are none yet"
        return UsageError(
            f"no session named {name!r}{listed}", hint="`llamapipe sessions` lists them"
        )
