"""What the routes share, made once and only when first needed: the model (loading the
embedded one takes seconds), the index, the session store, the sandbox."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.settings import Settings


@dataclass
class Services:
    settings: Settings
    index_path: Path
    backend: Any = None  # a pipelines.backends.Backend; loaded on first use when None
    token_required: bool = False
    _index: Any = None
    _store: Any = None
    _sandbox: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _model_lock: threading.Lock = field(default_factory=threading.Lock)  # loading takes seconds

    @property
    def evals_dir(self) -> Path:
        return self.settings.data_dir / "evals"

    def model(self) -> Any:
        with self._model_lock:
            if self.backend is None:
                from pipelines.backends import load_backend

                backend = load_backend(self.settings)
                backend.warm()
                self.backend = backend
            return self.backend

    def index(self) -> Any:
        """The index, opened once; until there is one, the error that says how to make it."""
        with self._lock:
            if self._index is None:
                from pipelines.rag.opening import open_index

                self._index, _ = open_index(self.settings, self.index_path, dense=True)
            return self._index

    @property
    def index_ready(self) -> bool:
        from pipelines.rag import Index

        return Index.exists_at(self.index_path)

    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from pipelines.chat import SessionStore

                self._store = SessionStore.in_data_dir(self.settings.data_dir)
            return self._store

    def sandbox(self) -> Any:
        with self._lock:
            if self._sandbox is None:
                from pipelines.sandbox import Limits, Sandbox

                self._sandbox = Sandbox(
                    Limits.from_settings(self.settings),
                    isolation=self.settings.sandbox_isolation,
                )
            return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
