"""What the routes share: one Toolkit (the model, made on first use, since loading the
embedded one takes seconds; the index, the session store, the sandbox) and the server's own
settings (which index it serves, whether a token guards it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.toolkit import Toolkit


@dataclass
class Services:
    toolkit: Toolkit
    index_path: Path
    token_required: bool = False

    @property
    def settings(self) -> Any:
        return self.toolkit.settings

    @property
    def evals_dir(self) -> Path:
        return self.settings.data_dir / "evals"

    @property
    def backend(self) -> Any:
        """The model if it is loaded yet, else None."""
        return self.toolkit.loaded_backend

    def index(self) -> Any:
        """The index, opened once; until there is one, the error that says how to make it."""
        return self.toolkit.index(self.index_path)

    @property
    def index_ready(self) -> bool:
        from pipelines.rag import Index

        return Index.exists_at(self.index_path)

    def store(self) -> Any:
        return self.toolkit.store()

    def close(self) -> None:
        self.toolkit.close()
