"""Backends are providers in one registry: settings, the CLI, `models`, evals and the default
concurrency derive from it, and a backend registered from outside (here, the tests' own)
is used everywhere by name, the way the built-in ones are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from evals.spec import load_spec
from pipelines.backends import REGISTRY, Backend, Choice, Provider, Registry, load_backend
from pipelines.backends.describe import describe_model
from pipelines.backends.providers import BUILT_IN
from pipelines.errors import ConfigError, UsageError
from pipelines.pool import default_concurrency
from pipelines.settings import Settings, describe_settings, load_settings
from tests.cli_helpers import run_cli
from tests.fakes import ScriptedChat
from tests.test_settings import write_config


def test_every_backend_setting_comes_from_its_provider_and_keeps_its_old_name() -> None:
    names = {n for p in BUILT_IN for n in p.setting_names()}
    assert names == {
        "ollama_host", "ollama_model", "ollama_embed_model", "gguf", "embed_gguf",
        "openai_base_url", "openai_model", "openai_embed_model", "openai_embed_base_url",
        "openai_api_key_env",
    }  # fmt: skip
    assert names <= set(Settings.model_fields)
    rows = [r["name"] for r in describe_settings(load_settings())]
    assert rows[0] == "backend" and set(rows[1 : 1 + len(names)]) == names, "shown together"
    ollama = REGISTRY.get("ollama").read(load_settings({"ollama_model": "llama3.2:3b"}))
    assert (ollama.model, ollama.host) == ("llama3.2:3b", "http://127.0.0.1:11434")


def test_a_backend_table_in_the_config_file_is_its_settings(
    isolated_user_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        isolated_user_state,
        '[ollama]\nhost = "box:1"\nmodel = "qwen3:4b"\n\n[openai]\nmodel = "m"\n',
    )
    settings = load_settings()
    assert (settings.ollama_host, settings.ollama_model, settings.openai_model) == (
        "box:1", "qwen3:4b", "m",
    )  # fmt: skip
    assert settings.origin("ollama_model") == f"file {path}"
    monkeypatch.setenv("OLLAMA_HOST", "env-host:2")  # another tool's variable still wins
    assert load_settings().ollama_host == "env-host:2"
    write_config(isolated_user_state, "[ollama]\nhots = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'ollama_hots'"):
        load_settings()


def test_an_unknown_backend_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown backend 'olama'; use one of: auto, ollama"):
        load_settings({"backend": "olama"})


def test_concurrency_and_descriptions_are_what_each_backend_declares() -> None:
    assert [default_concurrency(n) for n in ("ollama", "openai", "embedded")] == [4, 8, 1]
    assert default_concurrency("nosuch") == 1
    chat = ScriptedChat(["x"])
    assert describe_model(chat) == ("ScriptedChat", "scripted-chat"), "nobody's model"


def _lab_provider(chat: ScriptedChat) -> Provider:
    """A backend as a user would add one: its own settings, its own select and build."""

    class LabSettings(BaseModel):
        url: str = "http://lab:1"

    def build(settings: Any, choice: Choice) -> Backend:
        return Backend("lab", "lab-model", chat, chat, None, choice.reason)  # type: ignore[arg-type]

    return Provider(
        name="lab",
        summary="'lab' (the lab's server)",
        select=lambda settings, mode: Choice(True, f"asked for the lab ({mode})"),
        build=build,
        settings=LabSettings,
        model_setting="ollama_model",
        concurrency=3,
        owns=lambda model: "lab-model" if model is chat else None,
    )


def test_a_registry_of_its_own_builds_what_its_providers_say() -> None:
    chat = ScriptedChat(["hello"])
    registry = Registry([_lab_provider(chat), *BUILT_IN])
    assert registry.choices()[:2] == ["auto", "lab"]
    backend = load_backend(load_settings({"backend": "embedded"}).model_copy(
        update={"backend": "lab"}), registry)  # fmt: skip
    assert (backend.name, backend.reason, backend.chat) == (
        "lab",
        "asked for the lab (asked)",
        chat,
    )
    assert registry.concurrency("lab") == 3 and registry.describe(chat) == ("lab", "lab-model")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_lab_provider(chat))
    with pytest.raises(ValueError, match="Settings is already made"):
        REGISTRY.register(_lab_provider(chat))  # its settings could no longer be fields
    assert "lab" not in REGISTRY.names()


def test_a_registered_backend_serves_the_cli_and_evals_by_name(
    use_model: Callable[..., Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = use_model(ScriptedChat(lambda prompt: "안녕하세요, 반갑습니다."))
    r = run_cli(capsys, "chat", "안녕?", "--backend", "scripted", "--json")
    assert r.code == 0, r.stderr
    assert (r.json()["backend"], r.json()["text"]) == ("scripted", "안녕하세요, 반갑습니다.")
    assert "backend: scripted" in r.stderr
    helped = run_cli(capsys, "chat", "--help")  # built when the CLI is imported
    assert "auto | ollama | embedded | openai" in helped.stdout
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"id": "1", "source": "안녕", "references": ["안녕하세요"]}\n', encoding="utf-8"
    )
    spec = tmp_path / "s.yaml"
    system = "{name: a, prompt: hyangga/zero_shot, backend: scripted}"
    spec.write_text(f"name: s\ndataset: {data}\nsystems: [{system}]\n", encoding="utf-8")
    ran = run_cli(capsys, "eval", "run", str(spec), "--out", str(tmp_path / "runs"), "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json()["systems"]["a"]["model_calls"] == 1 and len(model.calls) == 2
    spec.write_text(spec.read_text().replace("backend: scripted", "backend: nosuch"))
    with pytest.raises(UsageError, match=r"unknown backend 'nosuch'; use one of: auto, .*scripted"):
        load_spec(spec)
