"""Shared fixtures.

- Every test runs with user state (config, data, caches, HOME) in a tmp dir and with
  no LLAMAPIPE_* / OLLAMA_HOST from the developer's shell: tests never touch `~`.
- Sockets are disabled (pytest-socket) except in tests marked `ollama`.
- `ollama_target` is our Ollama-protocol server on loopback (backed by the embedded
  model), or with `--real-ollama` the real Ollama at $OLLAMA_HOST.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.backends.gguf import default_gguf
from pipelines.backends.ollama import normalize_host, probe
from pipelines.sandbox import SandboxUnavailableError, check_system
from tests.ollama_server import OllamaProtocolServer

TEST_MODEL = "smollm2:135m"


def _sandbox_missing() -> str:
    try:
        check_system()
    except SandboxUnavailableError as exc:
        return exc.message
    return ""


# Where the kernel cannot build the sandbox walls, tests that need them skip and say why.
NO_WALLS = _sandbox_missing()
needs_walls = pytest.mark.skipif(bool(NO_WALLS), reason=f"no sandbox walls here: {NO_WALLS}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--real-ollama",
        action="store_true",
        help="run the `ollama` tests against the real Ollama at $OLLAMA_HOST "
        "(model: $LLAMAPIPE_TEST_OLLAMA_MODEL, else the first one pulled)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ollama"):
            item.add_marker(pytest.mark.enable_socket)


# Read before the autouse fixture below wipes them from the environment.
_REAL_OLLAMA_HOST = os.environ.get("OLLAMA_HOST", "")
_REAL_OLLAMA_MODEL = os.environ.get("LLAMAPIPE_TEST_OLLAMA_MODEL", "")


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("LLAMAPIPE_") or name == "OLLAMA_HOST":
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
