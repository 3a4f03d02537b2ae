"""The llama.cpp build every embedded use goes through: no AMX kernels, and a guard for builds
that have them. llama-cpp-python's own OpenAI-compatible server runs on the same build."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.backends import llama_build
from pipelines.backends.gguf import default_gguf


def test_the_installed_build_has_no_amx_kernels() -> None:
    """`make install` builds without them (the Makefile's -mno-amx-*); a cached wheel with
    them is caught there and rebuilt. This fails if an install ever slips one through."""
    assert "CPU :" in llama_build.system_info()
    assert not llama_build.has_amx(), llama_build.system_info()
    assert llama_build.main(["--check"]) == 0


def test_a_build_with_amx_loads_models_without_extra_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llama_cpp import llama_cpp as low_level

    monkeypatch.setattr(llama_build, "has_amx", lambda: True)
    original = low_level.llama_model_default_params
    assert original().use_extra_bufts is True  # llama.cpp's default
    with llama_build.safe_model_params():
        assert low_level.llama_model_default_params().use_extra_bufts is False
    assert low_level.llama_model_default_params is original


def test_check_refuses_a_build_with_amx(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(llama_build, "system_info", lambda: "CPU : AVX2 = 1 | AMX_INT8 = 1 |")
    assert llama_build.main(["--check"]) == 1
    assert "rebuild it: `make install`" in capsys.readouterr().err


# -- python -m llama_cpp.server -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}: "
                            f"{(tmp_path / 'server.log').read_text()[-2000:]}")  # fmt: skip
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not answer within 120 s")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
@pytest.mark.enable_socket
def test_llama_cpp_server_answers_a_multi_token_prompt(llama_server: str) -> None:
    """The server crashed in llama_decode on the AMX build; it shares the project's build."""
    doc = _post(
        f"{llama_server}/v1/chat/completions",
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "향가는 무엇인가요? Answer in one sentence."},
            ],
            "max_tokens": 12,
            "temperature": 0,
        },
    )
    assert doc["usage"]["prompt_tokens"] > 20
    assert doc["usage"]["completion_tokens"] >= 1
    assert doc["choices"][0]["message"]["content"].strip()
