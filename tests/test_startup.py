"""Start-up stays light: what `--help`, `--version`, tab completion and `models` import, and
the Korean analyser built only for Korean text. Timings live in bench/startup.py; these
check only what can be checked without a clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.backends import llama_build
from pipelines.rag import tokenize as tokenize_module
from pipelines.rag.tokenize import query_terms, tokenize, tokenize_many

ROOT = Path(__file__).resolve().parent.parent

# What no command line needs to show help: each costs 0.05-0.5 s to import.
HEAVY = ("langchain_core", "langchain_ollama", "langchain_openai", "openai", "ollama",
         "fastapi", "uvicorn", "numpy", "kiwipiepy", "llama_cpp", "bm25s", "jinja2",
         "pipelines.rag", "pipelines.toolkit", "evals.runner", "llamapipe_app.web",
         # the settings model (pydantic, pydantic-settings) and the backends' modules (their
         # settings are pydantic models): help names the backends, it never makes settings
         "pydantic", "pydantic_settings", "pipelines.settings_model",
         "pipelines.backends.providers.ollama", "pipelines.backends.providers.embedded",
         "pipelines.backends.providers.openai")  # fmt: skip
# `models` loads llama.cpp (its version and build) and looks at servers, but builds no model.
HEAVY_FOR_MODELS = ("langchain_core", "langchain_ollama", "langchain_openai", "openai",
                    "ollama", "fastapi", "uvicorn", "kiwipiepy", "pipelines.rag")  # fmt: skip

# Runs the CLI in-process, then reports (on stderr, last line) which of HEAVY got imported.
DRIVER = """
import json, sys
import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:  # completion exits from inside click
    code = exc.code
heavy = json.loads(sys.stdin.read())
found = sorted(m for m in heavy if m in sys.modules)
print("\\n" + json.dumps({"code": code, "imported": found}), file=sys.stderr)
"""


def _run(args: list[str], heavy: tuple[str, ...], **env: str) -> dict[str, Any]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OLLAMA_HOST": "127.0.0.1:9",  # the discard port: refused at once, nothing there
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        input=json.dumps(heavy),
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    report["stdout"] = done.stdout
    return report


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["rag", "--help"], ["eval", "-h"], ["chat", "--help"],
     ["eval", "schedule", "--help"]],
)  # fmt: skip
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    report = _run(args, HEAVY)
    assert report["code"] == 0
    assert report["imported"] == [], f"`llamapipe {' '.join(args)}` imported {report['imported']}"


def test_the_backends_are_listed_without_importing_them() -> None:
    """The registry knows the backends by name (providers/__init__.py) and imports a
    backend's module only when asked more of it; `Settings` is made on first use."""
    probe = (
        "import sys\n"
        "from pipelines.backends.registry import REGISTRY\n"
        "from pipelines.settings import load_settings\n"
        "names = REGISTRY.choices()\n"
        "light = not any(m in sys.modules for m in ('pydantic', 'pipelines.settings_model'))\n"
        "from pipelines.settings import Settings\n"
        "made = isinstance(load_settings(), Settings) and 'backend' in Settings.model_fields\n"
        "print(names, light, made, [p.name for p in REGISTRY.providers()])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("] ", 1)[1].strip() == "True True ['ollama', 'embedded', 'openai']"
    assert done.stdout.startswith("['auto', 'ollama', 'embedded', 'openai']")


def test_a_declared_backend_must_be_what_its_module_makes() -> None:
    from pipelines.backends import Registry
    from pipelines.backends.providers import load

    registry = Registry()
    registry.declare("ollama", lambda: load("ollama"))
    registry.declare("olama", lambda: load("ollama"))  # a typo in the list of names
    assert registry.names() == ["ollama", "olama"]
    assert registry.get("ollama").name == "ollama"
    with pytest.raises(ValueError, match="'olama' was declared, but its module makes 'ollama'"):
        registry.get("olama")


def test_tab_completion_imports_nothing_heavy() -> None:
    report = _run(
        [], HEAVY, _LLAMAPIPE_COMPLETE="complete_bash", COMP_WORDS="llamapipe ra", COMP_CWORD="1"
    )
    assert "rag" in report["stdout"].split()
    assert report["imported"] == []


def test_models_builds_no_model_and_imports_no_langchain() -> None:
    report = _run(["models", "--json"], HEAVY_FOR_MODELS)
    assert report["code"] == 0
    assert json.loads(report["stdout"])["ollama"]["error"] == "connection refused"
    assert report["imported"] == []


def test_models_loads_llama_cpp_once_to_learn_its_build() -> None:
    first = _run(["models", "--json"], ("llama_cpp", "numpy"))
    second = _run(["models", "--json"], ("llama_cpp", "numpy"))  # the same cache dir
    assert first["imported"] == ["llama_cpp", "numpy"]
    assert second["imported"] == []
    shown = [json.loads(r["stdout"])["embedded"] for r in (first, second)]
    assert shown[0]["llama_cpp"] and shown[0]["llama_cpp"] == shown[1]["llama_cpp"]
    assert shown[0]["llama_cpp_amx"] is shown[1]["llama_cpp_amx"] is False


def test_a_rebuilt_llama_cpp_is_asked_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files, amx = ["libllama.so:1:1"], [True]
    monkeypatch.setattr(llama_build, "_installed_files", lambda: files[0])
    monkeypatch.setattr(llama_build, "llama_cpp_version", lambda: "0.3.99")
    monkeypatch.setattr(llama_build, "has_amx", lambda: amx[0])
    assert llama_build.build_facts(tmp_path) == ("0.3.99", True)
    amx[0] = False  # what a rebuild without AMX would say, asked
    assert llama_build.build_facts(tmp_path) == ("0.3.99", True)  # the same files: kept
    files[0] = "libllama.so:2:2"
    assert llama_build.build_facts(tmp_path) == ("0.3.99", False)


class CountingKiwi:
    """Stands in for kiwipiepy.Kiwi and counts how often one is built."""

    built = 0

    def __init__(self, real: Any) -> None:
        type(self).built += 1
        self._real = real()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def counted_kiwi(monkeypatch: pytest.MonkeyPatch) -> type[CountingKiwi]:
    kiwipiepy = pytest.importorskip("kiwipiepy")
    real = kiwipiepy.Kiwi
    CountingKiwi.built = 0
    monkeypatch.setattr(kiwipiepy, "Kiwi", lambda: CountingKiwi(real))
    monkeypatch.setattr(tokenize_module, "_kiwi", None)  # as in a fresh process
    return CountingKiwi


def test_text_without_hangul_never_builds_the_korean_analyser(
    counted_kiwi: type[CountingKiwi],
) -> None:
    question = "Who published a reading of the hyangga in 1929?"
    assert tokenize(question) == ["published", "reading", "hyangga", "1929"]
    assert query_terms(question)[0] == frozenset(["published"])
    tokenize_many(["Cheoyongga is a hyangga.", "Silla, 879 AD", ""])
    assert counted_kiwi.built == 0


def test_korean_text_builds_the_analyser_once(counted_kiwi: type[CountingKiwi]) -> None:
    assert "처용가" in tokenize("처용가는 누가 지었나요?")
    tokenize_many(["향가는 신라의 노래이다.", "Plain English."])
    query_terms("처용가는 누가 지었나요?")
    assert counted_kiwi.built == 1
