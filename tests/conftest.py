"""Shared fixtures.

- Every test runs with user state (config, data, caches, HOME) in a tmp dir and with
  no LLAMAPIPE_* / OLLAMA_HOST / OPENAI_* from the developer's shell: tests never touch `~`.
- Sockets are disabled (pytest-socket) except in tests marked `ollama`, `openai` or `web`.
- `use_model(chat)` makes the scripted fake `chat` the backend every front end loads
  (tests/scripted_backend.py registers it as backend `scripted`).
- `ollama_target` is our Ollama-protocol server on loopback (backed by the embedded
  model), or with `--real-ollama` the real Ollama at $OLLAMA_HOST.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipelines.backends.gguf import default_gguf
from pipelines.backends.ollama_probe import normalize_host, probe
from pipelines.sandbox import SandboxUnavailableError, check_system
from tests.ollama_server import OllamaProtocolServer

TEST_MODEL = "smollm2:135m"


def _sandbox_missing() -> str:
    try:
        check_system()
    except SandboxUnavailableError as exc:
        return exc.message
    return ""


# Where the kernel cannot build the sandbox walls, tests that need them skip and say why;
# with LLAMAPIPE_REQUIRE_WALLS=1 (CI) they run anyway, so a missing wall fails the run.
REQUIRE_WALLS = os.environ.get("LLAMAPIPE_REQUIRE_WALLS", "") not in ("", "0")
NO_WALLS = "" if REQUIRE_WALLS else _sandbox_missing()
needs_walls = pytest.mark.skipif(bool(NO_WALLS), reason=f"no sandbox walls here: {NO_WALLS}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--openai-url",
        default="",
        help="run the `openai` tests against the OpenAI-compatible server at this base URL "
        "(key: $OPENAI_API_KEY; model: $LLAMAPIPE_TEST_OPENAI_MODEL, else the first listed; "
        "embeddings: $LLAMAPIPE_TEST_OPENAI_EMBED_MODEL) instead of llama-cpp-python's server",
    )
    parser.addoption(
        "--real-ollama",
        action="store_true",
        help="run the `ollama` tests against the real Ollama at $OLLAMA_HOST "
        "(model: $LLAMAPIPE_TEST_OLLAMA_MODEL, else the first one pulled)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(m) for m in ("ollama", "openai", "web")):
            item.add_marker(pytest.mark.enable_socket)


# Other tools' variables llamapipe reads; the autouse fixture below wipes them too.
FOREIGN_VARIABLES = ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY")

# Read before the autouse fixture below wipes them from the environment.
_REAL_OLLAMA_HOST = os.environ.get("OLLAMA_HOST", "")
_REAL_OLLAMA_MODEL = os.environ.get("LLAMAPIPE_TEST_OLLAMA_MODEL", "")
_OPENAI_TEST_KEY = os.environ.get("OPENAI_API_KEY", "")
_OPENAI_TEST_MODEL = os.environ.get("LLAMAPIPE_TEST_OPENAI_MODEL", "")
_OPENAI_TEST_EMBED_MODEL = os.environ.get("LLAMAPIPE_TEST_OPENAI_EMBED_MODEL", "")


@pytest.fixture
def use_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """`use_model(chat, completion=None, embeddings=None, build=None)`: from then on the
    backend `scripted`, chosen by LLAMAPIPE_BACKEND, serves these models."""
    from tests.scripted_backend import registered, scripted_provider

    with ExitStack() as stack:

        def use(chat: Any, completion: Any = None, **kw: Any) -> Any:
            stack.enter_context(registered(scripted_provider(chat, completion, **kw)))
            monkeypatch.setenv("LLAMAPIPE_BACKEND", "scripted")
            return chat

        yield use


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("LLAMAPIPE_") or name in FOREIGN_VARIABLES:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
    ]:
        monkeypatch.setenv(var, str(home / sub))
    return home


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return default_gguf()


@dataclass
class OllamaTarget:
    url: str
    model: str
    server: OllamaProtocolServer | None  # None when it is a real Ollama


@pytest.fixture(scope="session")
def _protocol_server(gguf_path: Path) -> Iterator[OllamaProtocolServer]:
    with OllamaProtocolServer({TEST_MODEL: gguf_path}) as server:
        yield server


@pytest.fixture
def ollama_target(request: pytest.FixtureRequest) -> OllamaTarget:
    """Where the `ollama` tests send HTTP: our server, or a real Ollama (--real-ollama)."""
    if not request.config.getoption("--real-ollama"):
        server = request.getfixturevalue("_protocol_server")
        server.clear()
        return OllamaTarget(url=server.url, model=TEST_MODEL, server=server)
    if not _REAL_OLLAMA_HOST:
        pytest.skip("--real-ollama: OLLAMA_HOST is not set, so there is no real Ollama to test")
    url = normalize_host(_REAL_OLLAMA_HOST)
    status = probe(url, timeout=3.0)
    if not status.reachable:
        pytest.skip(f"--real-ollama: no Ollama answers at {url} ({status.error})")
    model = _REAL_OLLAMA_MODEL or next(iter(status.model_names), "")
    if not model:
        pytest.skip(f"--real-ollama: Ollama at {url} has no models; `ollama pull llama3.2:1b`")
    if not status.has_model(model):
        pytest.skip(f"--real-ollama: Ollama at {url} has no {model}; `ollama pull {model}`")
    return OllamaTarget(url=url, model=model, server=None)


@pytest.fixture
def test_server(ollama_target: OllamaTarget) -> OllamaProtocolServer:
    """Our protocol server itself, for failure injection and request inspection."""
    if ollama_target.server is None:
        pytest.skip("failure injection needs llamapipe's test server, not a real Ollama")
    return ollama_target.server


@dataclass
class OpenAITarget:
    url: str  # the base URL, ending in /v1
    model: str
    embed_model: str  # "" when the server has no embedding model to test
    key: str  # "" when the server takes none
    ours: bool  # True: the llama-cpp-python server the suite started (its settings are known)


@pytest.fixture(scope="session")
def _llama_cpp_server(
    gguf_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAITarget]:
    from tests.openai_server import LlamaCppServer

    with LlamaCppServer(gguf_path, tmp_path_factory.mktemp("llama-cpp-server")) as server:
        yield OpenAITarget(
            url=server.url, model=server.chat_model, embed_model=server.embed_model,
            key=server.key, ours=True,
        )  # fmt: skip


@pytest.fixture
def openai_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> OpenAITarget:
    """Where the `openai` tests send HTTP: llama-cpp-python's own OpenAI-compatible server
    (`python -m llama_cpp.server`) on loopback, or any server given with --openai-url
    (`make test-openai`). $OPENAI_API_KEY is set to the server's key."""
    url = request.config.getoption("--openai-url")
    if not url:
        target: OpenAITarget = request.getfixturevalue("_llama_cpp_server")
    else:
        from pipelines.backends.openai_probe import normalize_base_url, probe_server

        base = normalize_base_url(url)
        status = probe_server(base, _OPENAI_TEST_KEY or None, timeout=5.0)
        if not status.reachable or status.error:
            pytest.fail(f"--openai-url: {base} is not usable: {status.error}")
        model = _OPENAI_TEST_MODEL or next(iter(status.model_names), "")
        target = OpenAITarget(base, model, _OPENAI_TEST_EMBED_MODEL, _OPENAI_TEST_KEY, False)
    if target.key:
        monkeypatch.setenv("OPENAI_API_KEY", target.key)
    return target
