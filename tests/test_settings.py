"""Settings: layers, origins, validation errors that say where the bad value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import EXIT_USAGE, ConfigError
from pipelines.settings import Settings, default_config_file, describe_settings, load_settings


def write_config(home: Path, text: str) -> Path:
    path = default_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    assert str(path).startswith(str(home)), "config must live under the test's HOME"
    return path


def test_defaults_come_from_the_model_and_say_so(isolated_user_state: Path) -> None:
    settings = load_settings()
    assert settings.backend == "auto"
    assert settings.temperature == 0.0 and settings.seed == 0
    assert settings.origin("backend") == "default"
    # user state is per-user and, in tests, under the tmp HOME
    assert settings.data_dir.is_relative_to(isolated_user_state)
    assert settings.cache_dir.is_relative_to(isolated_user_state)


def test_layers_cli_beats_env_beats_ollama_host_beats_file(
    isolated_user_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        isolated_user_state,
        'ollama_host = "file-host:1"\nollama_model = "file-model"\ntemperature = 0.3\nseed = 7\n',
    )
    monkeypatch.setenv("OLLAMA_HOST", "env-host:2")
    monkeypatch.setenv("LLAMAPIPE_OLLAMA_MODEL", "env-model")
    monkeypatch.setenv("LLAMAPIPE_TEMPERATURE", "0.6")
    settings = load_settings({"temperature": 0.9, "seed": None})

    assert settings.temperature == 0.9 and settings.origin("temperature") == "cli"
    assert settings.ollama_model == "env-model"
    assert settings.origin("ollama_model") == "env LLAMAPIPE_*"
    assert settings.ollama_host == "env-host:2"
    assert settings.origin("ollama_host") == "env OLLAMA_HOST"
    assert settings.seed == 7 and settings.origin("seed") == f"file {path}"

    monkeypatch.setenv("LLAMAPIPE_OLLAMA_HOST", "mine:3")
    assert load_settings().ollama_host == "mine:3"


def test_plain_settings_constructor_reads_the_same_layers(
    isolated_user_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(isolated_user_state, "max_tokens = 77\n")
    monkeypatch.setenv("OLLAMA_HOST", "somewhere:9")
    settings = Settings()
    assert settings.max_tokens == 77 and settings.ollama_host == "somewhere:9"


def test_lists_come_from_env_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAPIPE_STOP", '["\\n\\n", "끝"]')
    assert load_settings().stop == ["\n\n", "끝"]


def test_config_path_can_be_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('backend = "embedded"\n')
    monkeypatch.setenv("LLAMAPIPE_CONFIG", str(path))
    settings = load_settings()
    assert settings.backend == "embedded" and settings.config_file == path


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ("env", "env LLAMAPIPE_*"),
        ("cli", "--temperature"),
        ("file", "config.toml"),
    ],
)
def test_bad_value_names_the_setting_and_where_it_came_from(
    layer: str, expected: str, isolated_user_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {}
    if layer == "env":
        monkeypatch.setenv("LLAMAPIPE_TEMPERATURE", "hot")
    elif layer == "cli":
        overrides = {"temperature": 9.0}
    else:
        write_config(isolated_user_state, "temperature = -1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)
    message = str(info.value)
    assert "temperature" in message
    assert f"from {expected}" in message or (layer == "file" and expected in message)
    assert info.value.exit_code == EXIT_USAGE
    assert "llamapipe config" in (info.value.hint or "")


def test_unknown_key_in_file_is_refused_with_the_known_ones(isolated_user_state: Path) -> None:
    write_config(isolated_user_state, "temprature = 0.1\n")
    with pytest.raises(ConfigError, match="unknown setting 'temprature'") as info:
        load_settings()
    assert "temperature" in (info.value.hint or "")


def test_broken_toml_is_a_config_error(isolated_user_state: Path) -> None:
    path = write_config(isolated_user_state, "backend = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings()
    assert str(path) in info.value.message


def test_describe_lists_every_field_with_a_description() -> None:
    rows = describe_settings(load_settings({"backend": "embedded"}))
    assert {r["name"] for r in rows} == set(Settings.model_fields)
    assert all(r["description"] for r in rows), "every setting is documented"
    backend = next(r for r in rows if r["name"] == "backend")
    assert backend["source"] == "cli" and backend["env"] == "LLAMAPIPE_BACKEND"


@pytest.mark.parametrize(
    "raw, expected",
    [("numpy", ["numpy"]), ("numpy, sympy", ["numpy", "sympy"]), ('["numpy"]', ["numpy"])],
)
def test_list_settings_from_the_environment_take_plain_or_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    """The README writes LLAMAPIPE_SANDBOX_MODULES=numpy; that must not be an internal error."""
    monkeypatch.setenv("LLAMAPIPE_SANDBOX_MODULES", raw)
    monkeypatch.setenv("LLAMAPIPE_STOP", "foo")
    settings = load_settings()
    assert settings.sandbox_modules == expected
    assert settings.stop == ["foo"]


def test_broken_json_list_in_the_environment_says_how_to_write_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMAPIPE_STOP", '["a,b"')
    with pytest.raises(ConfigError, match="LLAMAPIPE_STOP is not valid JSON") as info:
        load_settings()
    assert info.value.exit_code == EXIT_USAGE and "a,b" in (info.value.hint or "")


def test_a_misspelt_setting_gets_a_suggestion(isolated_user_state: Path) -> None:
    write_config(isolated_user_state, "max_token = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_token'") as info:
        load_settings()
    assert info.value.hint == "did you mean 'max_tokens'?"
