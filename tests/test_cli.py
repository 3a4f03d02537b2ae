"""The `llamapipe` command as users run it: output, --json, errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import EXIT_BACKEND, EXIT_USAGE
from tests.cli_helpers import run_cli
from tests.conftest import OllamaTarget
from tests.ollama_server import refused_url


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "--help")
    assert result.code == 0
    assert "Examples" in result.stdout and 'llamapipe chat "' in result.stdout
    for command in ("chat", "models", "config"):
        assert command in result.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import __version__

    result = run_cli(capsys, "--version")
    assert result.code == 0 and result.stdout.strip() == f"llamapipe {__version__}"


def test_config_json_reports_values_and_sources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAPIPE_MAX_TOKENS", "99")
    result = run_cli(capsys, "config", "--json")
    assert result.code == 0, result.stderr
    rows = {r["name"]: r for r in result.json()["settings"]}
    assert rows["max_tokens"]["value"] == 99 and rows["max_tokens"]["source"] == "env LLAMAPIPE_*"
    assert rows["backend"]["source"] == "default"
    assert result.json()["config_file_exists"] is False


def test_config_table_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "config")
    assert result.code == 0
    assert "ollama_host" in result.stdout and "default" in result.stdout
    assert "config file:" in result.stderr


def test_bad_setting_is_one_clear_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAPIPE_BACKEND", "gpu")
    result = run_cli(capsys, "config")
    assert result.code == EXIT_USAGE
    assert result.stderr.startswith("error: setting 'backend' from env LLAMAPIPE_* is invalid")
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_backend_flag(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "chat", "hi", "--backend", "nope")
    assert result.code == EXIT_USAGE
    assert "from --backend is invalid" in result.stderr


def test_empty_prompt_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "chat", "   ", "--backend", "embedded")
    assert result.code == EXIT_USAGE and "the prompt is empty" in result.stderr


def test_missing_gguf_exit_4_with_hint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = run_cli(
        capsys, "chat", "hi", "--backend", "embedded", "--gguf", str(tmp_path / "x.gguf")
    )
    assert result.code == EXIT_BACKEND
    assert "does not exist" in result.stderr and "LLAMAPIPE_GGUF" in result.stderr


def test_click_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "pal", "ask")
    assert result.code == EXIT_USAGE and "Missing argument" in result.stderr


@pytest.mark.ollama
def test_models_json_with_nothing_listening(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", refused_url())
    result = run_cli(capsys, "models", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["ollama"]["reachable"] is False and "refused" in doc["ollama"]["error"]
    assert doc["embedded"]["architecture"] == "llama"
    assert doc["embedded"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert doc["embedded"]["size_bytes"] > 90e6 and doc["embedded"]["llama_cpp"]
    assert doc["embedded"]["llama_cpp_amx"] is False  # make install builds without AMX
    # OLLAMA_HOST names a server, so auto will not swap in the embedded model; it says why.
    assert doc["auto"]["choice"] is None and "cannot reach Ollama" in doc["auto"]["reason"]


@pytest.mark.ollama
@pytest.mark.slow
def test_models_lists_ollama_models(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ollama_target: OllamaTarget
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_target.url)
    monkeypatch.setenv("LLAMAPIPE_OLLAMA_MODEL", ollama_target.model)
    doc = run_cli(capsys, "models", "--json").json()
    assert doc["ollama"]["reachable"] and doc["ollama"]["has_model"]
    assert ollama_target.model in [m["name"] for m in doc["ollama"]["models"]]
    assert doc["auto"]["choice"] == "ollama"
    table = run_cli(capsys, "models")
    assert "reachable" in table.stdout and ollama_target.model in table.stdout


@pytest.mark.ollama
def test_ollama_unreachable_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    url = refused_url()
    result = run_cli(capsys, "chat", "hi", "--backend", "ollama", "--host", url)
    assert result.code == EXIT_BACKEND
    assert f"cannot reach Ollama at {url}" in result.stderr
    assert "--backend embedded" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_chat_streams_on_stdout_and_notes_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys, "chat", "What is the capital of France?", "-b", "embedded", "--max-tokens", "24"
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip()
    assert (
        "backend: embedded (SmolLM2-135M-Instruct.Q4_1) - asked for the embedded backend"
        in result.stderr
    )


@pytest.mark.slow
def test_chat_json_korean_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys,
        "chat",
        "안녕하세요!",
        "-b",
        "embedded",
        "--max-tokens",
        "16",
        "--system",
        "한국어로 답하세요.",
        "--json",
        "--verbose",
    )
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["text"] and doc["backend"] == "embedded" and doc["usage"]["output_tokens"] <= 16
    assert "--- system ---\n한국어로 답하세요.\n--- user ---\n안녕하세요!" in result.stderr


@pytest.mark.slow
def test_chat_same_seed_same_answer(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "chat",
        "Invent a name for a cat.",
        "-b",
        "embedded",
        "-t",
        "1.0",
        "--seed",
        "5",
        "--max-tokens",
        "16",
        "--json",
    ]
    assert run_cli(capsys, *args).json()["text"] == run_cli(capsys, *args).json()["text"]


@pytest.mark.slow
def test_installed_console_script_and_stdin(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("llamapipe")
    env = {**os.environ, "LLAMAPIPE_BACKEND": "embedded", "LLAMAPIPE_MAX_TOKENS": "12"}
    result = subprocess.run(
        [str(exe), "chat", "-", "--json"],
        input="Say hi.",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert '"backend": "embedded"' in result.stdout
