"""The llama.cpp build every embedded use goes through: no AMX kernels, and a guard for builds
that have them. llama-cpp-python's own OpenAI-compatible server runs on the same build."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.backends import llama_build
from pipelines.backends.gguf import default_gguf
from tests.openai_server import LlamaCppServer


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


@pytest.mark.slow
@pytest.mark.enable_socket
def test_llama_cpp_server_answers_a_multi_token_prompt(tmp_path: Path) -> None:
    """The server crashed in llama_decode on the AMX build; it shares the project's build."""
    with LlamaCppServer(default_gguf(), tmp_path) as server:
        doc = server.post(
            "/chat/completions",
            {
                "model": server.chat_model,
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
