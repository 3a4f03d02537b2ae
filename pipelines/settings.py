"""All of llamapipe's settings, in one pydantic-settings model.

Where a value comes from, highest priority first:

1. CLI flags (or keyword arguments to `load_settings`)
2. `LLAMAPIPE_<FIELD>` environment variables (lists as JSON or comma-separated:
   `LLAMAPIPE_SANDBOX_MODULES=numpy,sympy`; empty means empty: `LLAMAPIPE_SEED=`)
3. `OLLAMA_HOST` and `OPENAI_BASE_URL`, the variables Ollama's and OpenAI's own tools read
   (for `ollama_host` and `openai_base_url` only: what a backend declares as `env_aliases`)
4. the TOML config file: `$LLAMAPIPE_CONFIG`, else `<user config dir>/llamapipe/config.toml`
   (`~/.config/llamapipe/config.toml` on Linux)
5. the defaults (pipelines/settings_model.py), and each backend's own
   (pipelines/backends/providers/)

`llamapipe config` prints every effective value with the layer it came from.

This module is light: the model (pydantic-settings, each backend's fields) is made in
pipelines/settings_model.py when settings are first loaded or `Settings` is first imported
from here; the front ends name `Settings` in type hints only, so `llamapipe --help` never
makes it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.backends.registry import REGISTRY

if TYPE_CHECKING:
    from pipelines.settings_model import Settings as Settings

APP_NAME = "llamapipe"
ENV_PREFIX = "LLAMAPIPE_"
CONFIG_ENV = "LLAMAPIPE_CONFIG"


def model_field(backend: str) -> str | None:
    """The setting that `--model` (and an eval system's `model:`) names for `backend`."""
    return REGISTRY.model_setting(backend)


def host_field(backend: str) -> str | None:
    """The setting that `--host` names for `backend`."""
    return REGISTRY.host_setting(backend)


def default_config_file() -> Path:
    """The TOML file read when `$LLAMAPIPE_CONFIG` is not set."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def _model() -> Any:
    return importlib.import_module("pipelines.settings_model")


def __getattr__(name: str) -> Any:
    """`Settings`, made when first asked for (the front ends name it in type hints only)."""
    if name == "Settings":
        return _model().Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_settings(
    overrides: Mapping[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the effective settings and remember where each value came from.

    `overrides` are CLI flags; None values mean "flag not given" and are ignored.
    """
    settings: Settings = _model().load_settings(overrides, config_file)
    return settings


def describe_settings(settings: Settings) -> list[dict[str, Any]]:
    """Each field's value, origin and description, for `llamapipe config`; an empty backend
    setting shows what it stands for (the GGUF in use), its source saying so."""
    rows: list[dict[str, Any]] = _model().describe_settings(settings)
    return rows
