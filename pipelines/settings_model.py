"""The settings model itself (pydantic-settings), made when settings are first loaded: see
pipelines/settings.py, which is what the rest of llamapipe imports."""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import platformdirs
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipelines.backends.registry import REGISTRY
from pipelines.errors import ConfigError
from pipelines.settings import APP_NAME, ENV_PREFIX, default_config_file


class _Settings(BaseSettings):
    """Effective configuration. Build it with `load_settings()` to learn each value's origin."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    # -- which model ------------------------------------------------------------------
    backend: str = Field(
        "auto",
        description="Model backend: "
        + ", ".join(p.summary for p in REGISTRY.providers())
        + ", or 'auto' (Ollama when it is reachable and has the model, else embedded).",
    )
    # Each backend's own settings follow here, flat (`ollama_host`, `gguf`, ...): see
    # `_backend_fields` and pipelines/backends/providers/.

    # -- generation -----------------------------------------------------------------------
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy and repeatable."
    )
    seed: int | None = Field(
        0, description="Sampling seed, so runs repeat; empty means a fresh seed each call."
    )
    max_tokens: int = Field(512, ge=1, description="Most tokens generated per call.")
    num_ctx: int = Field(4096, ge=256, description="Context window in tokens (prompt plus answer).")
    stop: list[str] = Field(
        default_factory=list, description="Stop sequences; generation ends before any of them."
    )

    # -- runtime --------------------------------------------------------------------------
    timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds to wait for a served model (Ollama, OpenAI-compatible) to answer.",
    )
    probe_timeout: float = Field(
        1.0, gt=0, description="Seconds 'auto' waits to learn whether Ollama is there."
    )
    retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Times a busy (429/503) or broken-off answer from a served model is tried "
        "again, after pauses that double from 0.5 s, with jitter.",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Model calls an eval runs at once; empty means what the backend declares ("
        + ", ".join(f"{p.name} {p.concurrency}" for p in REGISTRY.providers())
        + "; set OLLAMA_NUM_PARALLEL on an Ollama server to match).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for llama.cpp; empty means all cores. Idle threads sleep "
        "(OMP_WAIT_POLICY=PASSIVE), so two llamapipe processes share the cores gracefully.",
    )
    # -- sandbox (PAL programs) --------------------------------------------------------------
    sandbox_timeout: float = Field(5.0, gt=0, description="Seconds a sandboxed program may run.")
    sandbox_memory_mb: int = Field(256, ge=32, description="Memory cap for a sandboxed program.")
    sandbox_modules: list[str] = Field(
        default_factory=list,
        description="Modules a sandboxed program may import on top of the pure-computation "
        'standard ones (e.g. ["numpy"]).',
    )
    sandbox_isolation: Literal["linux", "unsafe"] = Field(
        "linux",
        description="'linux': OS walls (namespaces, Landlock, seccomp), refused where missing; "
        "'unsafe': no OS walls, labelled unsafe in every output.",
    )
    serve_token: SecretStr | None = Field(
        None,
        description="Token every request to `llamapipe serve` must carry; needed to serve "
        "beyond loopback (shown masked).",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)),
        description="Where indexes and eval history live.",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir(APP_NAME)),
        description="Where cached model outputs live.",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in REGISTRY.choices():
            raise ValueError(
                f"unknown backend {name!r}; use one of: {', '.join(REGISTRY.choices())}"
            )
        return name

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _config_file: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings()` reads the same layers as `load_settings`, minus origin tracking.
        return (
            init_settings,
            _EnvSource(settings_cls),
            *(_ForeignEnvSource(settings_cls, f, v) for f, v in _aliases()),
            _TomlSource(settings_cls, toml_file=default_config_file()),
        )

    def origin(self, field: str) -> str:
        """Where a field's value came from: 'default', 'cli', 'env …' or 'file …'."""
        return self._origins.get(field, "default")

    @property
    def config_file(self) -> Path:
        return self._config_file or default_config_file()


def _backend_fields() -> dict[str, Any]:
    """Each registered backend's own settings, as flat fields named by its prefix."""
    fields: dict[str, Any] = {}
    for provider in REGISTRY.providers():
        for name, info in provider.own_fields().items():
            fields[provider.setting(name)] = (info.annotation, info)
    return fields


def _aliases() -> list[tuple[str, str]]:
    """(setting, variable): other tools' variables some backend honours (`OLLAMA_HOST`)."""
    return [item for p in REGISTRY.providers() for item in p.env_aliases.items()]


if TYPE_CHECKING:  # the type checker sees the core; backend fields are read as Any

    class Settings(_Settings):
        def __getattr__(self, name: str) -> Any: ...

else:
    Settings = create_model(
        "Settings", __base__=_Settings, __module__=__name__, **_backend_fields()
    )
    REGISTRY.frozen_settings = True


class _TomlSource(TomlConfigSettingsSource):
    """The config file; a backend's settings may also be a table of their own:
    `[ollama]` `host = "..."` is `ollama_host = "..."`."""

    def __call__(self) -> dict[str, Any]:
        values = dict(super().__call__())
        for provider in REGISTRY.providers():
            table = values.get(provider.name)
            if provider.prefix != "" and isinstance(table, dict):
                del values[provider.name]
                values.update({provider.setting(k): v for k, v in table.items()})
        return values


class _EnvSource(EnvSettingsSource):
    """`LLAMAPIPE_*` variables; a list may be written as JSON or as `a,b,c`, as people do,
    and an empty one is empty (`LLAMAPIPE_SEED=`: a fresh seed each call, as its
    description says; a scheduled run pins unset settings so)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for name, info in self.settings_cls.model_fields.items():
            empty = self.env_vars.get(f"{self.env_prefix}{name}".lower()) == ""
            if empty and type(None) in typing.get_args(info.annotation):
                values[name] = None
        return values

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if isinstance(value, str) and not value.lstrip().startswith(("[", "{")):
                return [part.strip() for part in value.split(",") if part.strip()]
            raise ConfigError(
                f"{ENV_PREFIX}{field_name.upper()} is not valid JSON: {value[:80]!r}",
                hint='write a list as ["a", "b"] or as a,b',
            ) from None


class _ForeignEnvSource(PydanticBaseSettingsSource):
    """Reads another tool's variable (Ollama's `OLLAMA_HOST`, the OpenAI SDK's
    `OPENAI_BASE_URL`) for one field, so one setting points every tool at the server."""

    def __init__(self, settings_cls: type[BaseSettings], field: str, variable: str) -> None:
        super().__init__(settings_cls)
        self.field, self.variable = field, variable

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(self.variable, "").strip()
        return {self.field: value} if value else {}


def load_settings(
    overrides: Mapping[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the effective settings and remember where each value came from.

    `overrides` are CLI flags; None values mean "flag not given" and are ignored.
    """
    path = config_file or default_config_file()
    layers = _read_layers({k: v for k, v in (overrides or {}).items() if v is not None}, path)
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, values in reversed(layers):  # lowest priority first, so later ones win
        for key, value in values.items():
            merged[key] = value
            origins[key] = origin
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, origins, path) from None
    settings._origins = origins
    settings._config_file = path
    return settings


def _read_layers(cli: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The layers, highest priority first, each as (origin label, values)."""
    try:
        file_values = _TomlSource(Settings, toml_file=path)()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: {exc}",
            hint="fix the file, or point LLAMAPIPE_CONFIG at another one",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}",
            hint="check its permissions, or point LLAMAPIPE_CONFIG at another one",
        ) from None
    env_values = _EnvSource(Settings)()
    return [
        ("cli", cli),
        ("env " + ENV_PREFIX + "*", env_values),
        *((f"env {var}", _ForeignEnvSource(Settings, f, var)()) for f, var in _aliases()),
        (f"file {path}", file_values),
    ]


def _config_error(exc: ValidationError, origins: dict[str, str], path: Path) -> ConfigError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, list(Settings.model_fields), n=1)
        known = ", ".join(Settings.model_fields)
        return ConfigError(
            f"unknown setting '{field}' in {origins.get(field, f'file {path}')}",
            hint=f"did you mean '{close[0]}'?" if close else f"known settings: {known}",
        )
    origin = origins.get(field, "default")
    where = {"cli": f"--{field.replace('_', '-')}"}.get(origin, origin)
    env_name = ENV_PREFIX + field.upper()
    return ConfigError(
        f"setting '{field}' from {where} is invalid: {first['msg']}",
        hint=f"fix it ({env_name}, the config file, or the flag); "
        "`llamapipe config` shows all values",
    )


def describe_settings(settings: Settings) -> list[dict[str, Any]]:
    """Each field's value, origin and description, for `llamapipe config`; an empty backend
    setting shows what it stands for (the GGUF in use), its source saying so."""
    rows = []
    fields = dict(Settings.model_fields)
    backends = {n: fields.pop(n) for n in _backend_fields()}  # shown after `backend`
    first, *rest = fields.items()
    stands_for = {
        provider.setting(field): meant
        for provider in REGISTRY.providers()
        if provider.defaults is not None
        for field, meant in provider.defaults(settings).items()
    }
    for name, field in [first, *backends.items(), *rest]:
        value, source = getattr(settings, name), settings.origin(name)
        if value is None and source == "default" and name in stands_for:
            value, source = stands_for[name]
        rows.append(
            {
                "name": name,
                "value": str(value) if isinstance(value, Path | SecretStr) else value,
                "source": source,
                "env": ENV_PREFIX + name.upper(),
                "description": field.description or "",
            }
        )
    return rows
