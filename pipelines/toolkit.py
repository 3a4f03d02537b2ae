"""One object that builds the pipelines from settings, the same way for every front end.

    with Toolkit(load_settings()) as kit:
        answer = kit.rag(k=5).invoke("처용가는 누가 지었나요?")
        result = kit.pal(method="pal", task="math").invoke("What is 17 * 23?")

The CLI, the web app, the eval tasks and the benchmarks all build through a Toolkit, so a
RAG eval retrieves exactly as `rag ask` does and a PAL eval runs in the sandbox `pal ask`
uses. What it opens (the model, indexes, the session store, the sandbox) is made once, on
first use, and is safe to share between threads (the web app serves several at once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import UsageError

if TYPE_CHECKING:
    from pipelines.backends import Backend, Registry
    from pipelines.backends.provider import Found
    from pipelines.chat import Conversation, RAGConversation, SessionStore
    from pipelines.pal import PAL, Baseline, PALResult
    from pipelines.rag import RAG, Index
    from pipelines.sandbox import Sandbox
    from pipelines.settings import Settings

# Shows a message while a slow step runs (the CLI passes its spinner).
Progress = Callable[[str], AbstractContextManager[Any]]


def _quiet(message: str) -> AbstractContextManager[Any]:
    return nullcontext()


class Toolkit:
    """The model, the index, the session store and the sandbox for one `Settings`, and the
    RAG, PAL and chat pipelines built over them. `backend` injects a ready Backend (tests);
    `registry` is where backends come from (default: the built-in REGISTRY)."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._backend = backend
        self._injected = backend is not None
        self._variants: dict[str, Backend] = {}
        self._embeddings: Found | None = None
        self._indexes: dict[tuple[Path, bool], Index] = {}
        self._store: SessionStore | None = None
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # held while a model loads, which takes seconds

    # -- the model ---------------------------------------------------------------------------

    @property
    def loaded_backend(self) -> Backend | None:
        """The backend, if it is loaded (or was injected); None until then."""
        return self._backend

    def backend(self, progress: Progress | None = None) -> Backend:
        """The settings' backend, loaded and warmed once."""
        with self._model_lock:
            if self._backend is None:
                self._backend = self._load(self.settings, progress or _quiet)
            return self._backend

    def backend_for(self, settings: Settings, progress: Progress | None = None) -> Backend:
        """The backend for a variant of the settings (an eval system's own params), each
        loaded once; the toolkit's own settings give its own backend."""
        if settings == self.settings:
            return self.backend(progress)
        key = settings.model_dump_json()
        with self._model_lock:
            if key not in self._variants:
                self._variants[key] = self._load(settings, progress or _quiet)
            return self._variants[key]

    def _load(self, settings: Settings, progress: Progress) -> Backend:
        from pipelines.backends import load_backend

        with progress("Looking for a model..."):
            backend = load_backend(settings, self._registry)
        with progress(f"Loading {backend.model}..."):
            backend.warm()
        return backend

    def embeddings(self) -> Found:
        """(embeddings or None, model name, why): dense retrieval's model, found once."""
        with self._lock:
            if self._embeddings is None:
                self._embeddings = self._find_embeddings()
            return self._embeddings

    def _find_embeddings(self) -> Found:
        injected = self._backend if self._injected else None
        if injected is not None and injected.embeddings is not None:
            return injected.embeddings, injected.model, f"{injected.name}'s embeddings"
        from pipelines.backends import load_embeddings

        return load_embeddings(self.settings, self._registry)

    # -- what the pipelines read and write ---------------------------------------------------

    def index_path(self, path: str | Path | None = None) -> Path:
        """`path`, or the default index folder, <data_dir>/index."""
        return Path(path or self.settings.data_dir / "index").expanduser()

    def index(self, path: str | Path | None = None, *, dense: bool = True,
              allow_empty: bool = False) -> Index:  # fmt: skip
        """The index at `path` (default <data_dir>/index), for reading: dense when `dense`
        and an embeddings model is there, opened once. A reader never makes an index: a
        mistyped path is an error saying how to make one, and so (unless `allow_empty`,
        for listing) is an index with no documents yet."""
        where = self.index_path(path)
        key = (where, dense)
        with self._lock:
            index = self._indexes.get(key)
        if index is None:
            index = self._open(where, dense=dense, create=False)
        if not allow_empty and not index.sources():
            raise UsageError(
                f"the index at {index.path} is empty",
                hint=f"add documents: llamapipe rag ingest PATH... --index {index.path}",
            )
        with self._lock:
            return self._indexes.setdefault(key, index)

    def index_for_ingest(self, path: str | Path | None = None) -> Index:
        """The index at `path` to add documents to, made when it is not there yet."""
        return self._open(self.index_path(path), dense=True, create=True)

    def _open(self, where: Path, *, dense: bool, create: bool) -> Index:
        from pipelines.rag import Index

        embeddings, name = None, None
        if dense:
            embeddings, name, _ = self.embeddings()
        calls = 1
        if embeddings is not None:  # a served embeddings model takes several batches at once
            from pipelines.backends.describe import describe_model
            from pipelines.pool import default_concurrency

            calls = self.settings.concurrency or default_concurrency(describe_model(embeddings)[0])
        return Index(where, embeddings=embeddings, embed_model=name, create=create,
                     embed_concurrency=calls)  # fmt: skip

    def store(self) -> SessionStore:
        """The saved chat sessions, in <data_dir>."""
        with self._lock:
            if self._store is None:
                from pipelines.chat import SessionStore

                self._store = SessionStore.in_data_dir(self.settings.data_dir)
            return self._store

    def sandbox(self) -> Sandbox:
        """The sandbox PAL's programs run in, with the settings' limits; made once."""
        with self._lock:
            if self._sandbox is None:
                from pipelines.sandbox import Limits, Sandbox

                self._sandbox = Sandbox(
                    Limits.from_settings(self.settings), isolation=self.settings.sandbox_isolation
                )
            return self._sandbox

    def drop_sandbox(self) -> None:
        """Close the sandbox; the next `sandbox()` makes a new one (after one failed)."""
        with self._lock:
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close()

    def close(self) -> None:
        """Close what the toolkit opened (the sandbox's processes)."""
        self.drop_sandbox()

    def __enter__(self) -> Toolkit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipelines -----------------------------------------------------------------------

    def rag(
        self, *, k: int = 5, index: Index | str | Path | None = None,
        backend: Backend | None = None,
    ) -> RAG:  # fmt: skip
        """RAG over `index` (an Index, or a path to open; default the settings' index) on
        `backend` (default the settings'). The index is opened first: a missing one fails
        before a model loads."""
        from pipelines.rag import RAG, Index

        opened = index if isinstance(index, Index) else self.index(index)
        model = backend or self.backend()
        return RAG(model=model.chat, index=opened, k=k, backend=model.name)

    def pal(
        self,
        *,
        method: str = "pal",
        task: str = "math",
        form: str = "chat",
        samples: int = 1,
        retries: int = 1,
        backend: Backend | None = None,
    ) -> PAL | Baseline:
        """A PAL pipeline (the model's program run in the sandbox) or, for `method` cot or
        direct, the baseline on the same model; both give a PALResult. An unknown method,
        form or task fails before a model loads."""
        from pipelines.pal import PAL, Baseline
        from pipelines.pal.pipeline import resolve_task

        check_pal_options(method, form)
        resolve_task(task, "chat" if form == "chat" else "completion")
        chosen = backend or self.backend()
        model = chosen.chat if form == "chat" else chosen.completion
        if method == "pal":
            return PAL(
                model=model, sandbox=self.sandbox(), task=task, samples=samples, retries=retries
            )
        return Baseline(model=model, method=method, task=task)  # type: ignore[arg-type]

    def conversation(
        self, *, rag: bool = False, index: Index | str | Path | None = None, k: int = 5,
        backend: Backend | None = None,
    ) -> Conversation | RAGConversation:  # fmt: skip
        """A chat conversation saved in the session store; with `rag` (or an `index`), RAG
        chat over that index: follow-ups made standalone, every answer checked."""
        if rag or index is not None:
            from pipelines.chat import RAGConversation

            return RAGConversation(rag=self.rag(k=k, index=index, backend=backend),
                                   store=self.store())  # fmt: skip
        from pipelines.chat import Conversation

        return Conversation(model=(backend or self.backend()).chat, store=self.store())

    def save_pal_turn(self, session: str, question: str, result: PALResult) -> str:
        """Add a PAL question and its answer to a chat session (the program in the answer's
        meta); the answer's text as saved."""
        from pipelines.chat import Message

        text = f"{result.answer}" if result.ok else f"(no program succeeded: {result.error})"
        unsafe = self.settings.sandbox_isolation == "unsafe"  # no OS walls: said when reread
        meta = {"pal": {"program": result.program, "answer": result.answer, "ok": result.ok,
                        "unsafe": unsafe}}  # fmt: skip
        self.store().append(session, Message("user", question), Message("assistant", text, meta))
        return text


def check_pal_options(method: str, form: str) -> None:
    if method not in ("pal", "cot", "direct"):
        raise UsageError(
            f"--method must be pal, cot or direct, not {method!r}",
            hint="pal runs the model's program; cot and direct are the baselines",
        )
    if form not in ("chat", "completion"):
        raise UsageError(
            f"--form must be chat or completion, not {form!r}",
            hint="chat (the default) or completion (a raw-text prompt)",
        )
