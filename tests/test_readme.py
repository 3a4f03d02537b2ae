"""The README's shell examples run as written (those that need no Ollama, no network and no
root), in order, on the embedded model, from a folder that holds the repo's `evals/`.

A line is left out only for a reason in NOT_HERE; a new example runs by default.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# What a line starts with (after `llamapipe`), and why it cannot run here.
NOT_HERE = {
    "make ": "builds the venv this test runs in (CI runs `make test` itself)",
    "ollama ": "needs an Ollama server",
    "OLLAMA_HOST=": "needs an Ollama server at that address",
    "vllm ": "needs vLLM and a GPU",
    "llama-server ": "needs llama.cpp's server binary",
    "python -m llama_cpp.server": "serves until stopped (tests/test_openai.py starts one)",
    "llamapipe chat -b openai": "needs an OpenAI-compatible server (tests/test_openai.py)",
    "LLAMAPIPE_BACKEND=openai": "needs an OpenAI-compatible server (tests/test_openai.py)",
    "llamapipe pal run gsm8k_test.jsonl": "needs Ollama and the user's GSM8K file",
    "llamapipe eval report RUNS --compare RUN_A RUN_B": "placeholders for the user's runs",
    "llamapipe serve": "serves until stopped (tests/test_web*.py start the app on loopback)",
    "curl ": "needs `llamapipe serve` running (tests/test_web.py calls the same API)",
}
# Whose exit status is the model's answer: 1 is "no program succeeded" (documented).
ANSWER_DEPENDS = ("llamapipe pal ask",)


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def test_the_readme_has_examples_and_every_skip_still_matches_one() -> None:
    examples = readme_examples()
    assert len(examples) > 20
    for prefix in NOT_HERE:
        assert any(e.startswith(prefix) for e in examples), f"stale skip: {prefix}"


@pytest.mark.timeout(2400)  # every example, the three evals included: about 15 minutes
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "evals").symlink_to(ROOT / "evals")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "LLAMAPIPE_BACKEND": "auto",  # as a user has it: no Ollama here, so the embedded model
        "OLLAMA_HOST": "",
    }
    ran = []
    for example in readme_examples():
        if any(example.startswith(prefix) for prefix in NOT_HERE):
            continue
        command = example.replace(" [--install]", "")  # optional parts, shown in brackets
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        allowed = (0, 1) if command.startswith(ANSWER_DEPENDS) else (0,)
        shown = f"$ {command}\nexit {done.returncode}\n{done.stderr[-1500:]}"
        assert done.returncode in allowed, shown
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, shown
        if "--json" in shlex.split(command):
            assert done.stdout.lstrip().startswith(("{", "[")), shown
        ran.append(command)
    assert len(ran) >= 20, ran


def test_the_readme_backend_sketch_registers_and_builds(tmp_path: Path) -> None:
    """ "Adding a backend" as written: settings, choices and a built model follow."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a backend") :]
    (sketch,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    check = """
from pipelines.backends import load_backend
from pipelines.settings import load_settings

settings = load_settings({"backend": "lab"})
assert settings.lab_url == "http://box:1/v1" and settings.origin("lab_url") == "env LLAMAPIPE_*"
backend = load_backend(settings)
assert backend.name == "lab" and backend.chat.openai_api_base == "http://box:1/v1"
assert backend.chat.model_name == "lab-8b" and "lab server" in backend.reason
print("ok")
"""
    env = {**os.environ, "LLAMAPIPE_LAB_URL": "http://box:1/v1", "OLLAMA_HOST": ""}
    done = subprocess.run(
        [sys.executable, "-c", sketch + check], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-2000:]


@pytest.mark.slow
def test_the_readme_library_example_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use it as a library") : text.index("## Commands")]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "evals").symlink_to(ROOT / "evals")
    env = {**os.environ, "OLLAMA_HOST": ""}
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("embedded SmolLM2-135M-Instruct"), lines
    assert (tmp_path / "my-index").is_dir(), "the index was made where the example says"
