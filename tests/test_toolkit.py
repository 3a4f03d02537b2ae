"""pipelines.Toolkit: the model loaded once (even from several threads), indexes a reader
never makes, the PAL-or-baseline choice, a PAL turn saved in a session, what close() closes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines import Toolkit
from pipelines.backends import Backend
from pipelines.errors import UsageError
from pipelines.pal import PAL, Baseline
from pipelines.settings import Settings, load_settings
from tests.fakes import ScriptedChat, ScriptedLLM
from tests.scripted_backend import registered, scripted_provider


@pytest.fixture
def settings() -> Settings:
    return load_settings({"backend": "embedded"})  # models injected: none is loaded


def test_the_backend_loads_once_under_the_lock_and_warms() -> None:
    built, warmed, said = [], [], []
    chat = ScriptedChat(["hi"])

    def build(settings: Settings, choice: object) -> Backend:
        built.append(1)
        return Backend("scripted", "m", chat, ScriptedLLM(["x"]), None, "test",
                       warm_up=lambda: warmed.append(1))  # fmt: skip

    @contextmanager
    def progress(message: str) -> Iterator[None]:
        said.append(message)
        yield

    with registered(scripted_provider(chat, build=build)):
        settings = load_settings({"backend": "scripted"})
        kit = Toolkit(settings)
        _load_from_threads(kit, progress)
    assert built == [1] and warmed == [1] and kit.loaded_backend is not None
    assert said == ["Looking for a model...", "Loading m..."]
    assert kit.backend_for(settings) is kit.backend()


def _load_from_threads(kit: Toolkit, progress: object) -> None:
    assert kit.loaded_backend is None
    threads = [threading.Thread(target=kit.backend, args=(progress,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_reader_never_makes_an_index(settings: Settings, tmp_path: Path) -> None:
    kit = Toolkit(settings, backend=_backend())
    with pytest.raises(UsageError, match="no index at") as missing:
        kit.index(tmp_path / "typo")
    assert "llamapipe rag ingest" in (missing.value.hint or "")
    assert not (tmp_path / "typo").exists()
    kit.index_for_ingest(tmp_path / "new")
    with pytest.raises(UsageError, match="is empty") as empty:
        kit.index(tmp_path / "new")
    assert "llamapipe rag ingest" in (empty.value.hint or "")
    assert kit.index(tmp_path / "new", allow_empty=True).sources() == []


def test_pal_or_a_baseline(settings: Settings) -> None:
    kit = Toolkit(settings, backend=_backend())
    assert isinstance(kit.pal(), PAL)
    assert isinstance(kit.pal(method="cot"), Baseline)
    assert kit.pal(form="completion").model is kit.backend().completion
    with pytest.raises(UsageError, match="pal, cot or direct"):
        kit.pal(method="guess")
    assert kit._sandbox is not None
    kit.close()
    assert kit._sandbox is None, "close() closes the sandbox it made"


def test_a_pal_turn_joins_the_session_in_korean(settings: Settings) -> None:
    from pipelines.pal import PALResult

    kit = Toolkit(settings, backend=_backend())
    session = kit.store().create()
    result = PALResult(
        question="사과 3개와 4개는?", task="math", answer=7, ok=True,
        program="def solution(): ...", backend="scripted", model="m",
    )  # fmt: skip
    assert kit.save_pal_turn(session, result.question, result) == "7"
    user, answer = kit.store().messages(session)
    assert user.content == "사과 3개와 4개는?" and answer.meta["pal"]["answer"] == 7


def _backend() -> Backend:
    return Backend("scripted", "m", ScriptedChat(["hi"]), ScriptedLLM(["x"]), None, "test")
