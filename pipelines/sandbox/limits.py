"""What a sandboxed program may use: time, memory, output, scratch space, threads, modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import UsageError, first_problem

if TYPE_CHECKING:
    from pipelines.settings import Settings

# Pure computation: no files, processes, network, or interpreter internals.
DEFAULT_MODULES: tuple[str, ...] = (
    "math", "cmath", "fractions", "decimal", "numbers", "statistics", "random",
    "datetime", "calendar", "time", "zoneinfo", "itertools", "functools", "operator",
    "collections", "heapq", "bisect", "array", "re", "string", "textwrap", "unicodedata",
    "json", "copy", "dataclasses", "enum", "typing", "abc", "contextlib", "pprint",
    "reprlib", "difflib", "hashlib", "base64", "binascii", "struct", "graphlib", "secrets",
)  # fmt: skip

ALLOW_SETTING = "--allow-module NAME, LLAMAPIPE_SANDBOX_MODULES or Limits(extra_modules=...)"


class Limits(BaseModel):
    """Bounds for one sandboxed run. Every field has a safe default; all are configurable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(default=5.0, gt=0, le=3600, description="Wall-clock seconds per run.")
    memory_mb: int = Field(default=256, ge=32, description="Address-space cap in MiB.")
    output_kb: int = Field(
        default=64, ge=1, description="stdout + stderr cap in KiB; more is killed."
    )
    scratch_mb: int = Field(default=16, ge=1, description="Size of the per-run scratch dir in MiB.")
    threads: int = Field(default=4, ge=1, le=256, description="Most threads the program may run.")
    modules: tuple[str, ...] = Field(
        default=DEFAULT_MODULES, description="Modules the program may import (top-level names)."
    )
    extra_modules: tuple[str, ...] = Field(
        default=(), description="Modules allowed on top of `modules` (e.g. 'numpy')."
    )
    result_kb: int = Field(default=256, ge=1, description="Cap on the result as JSON, in KiB.")
    result_depth: int = Field(default=32, ge=1, description="Deepest nesting the result may have.")
    result_items: int = Field(default=100_000, ge=1, description="Most values the result may hold.")

    @property
    def allowed_modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.modules, *self.extra_modules)))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> Limits:
        """Limits from the `sandbox_*` settings, with explicit overrides on top."""
        values: dict[str, object] = {
            "timeout": settings.sandbox_timeout,
            "memory_mb": settings.sandbox_memory_mb,
            "extra_modules": tuple(settings.sandbox_modules),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            field, message, given = first_problem(exc)
            raise UsageError(
                f"sandbox limit {field}: {message} (got {given!r})",
                hint="e.g. --timeout 5 --memory 256",
            ) from None
