"""What a sandboxed run returns: plain data made from bytes the worker sent."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Killed = Literal["timeout", "memory", "output", "signal"]
Isolation = Literal["linux", "unsafe"]


class ErrorInfo(BaseModel):
    """How the program failed: exception type, message, traceback (program frames only)."""

    model_config = ConfigDict(frozen=True)
    FIELDS: ClassVar[tuple[str, ...]] = ("type", "message", "traceback")

    type: str
    message: str
    traceback: str = ""


class SandboxResult(BaseModel):
    """One run. `result` is `solution()`'s return value as JSON (other types as repr text)."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    result: Any = None
    stdout: str = ""
    stderr: str = ""
    error: ErrorInfo | None = None
    killed: Killed | None = None
    duration_ms: float
    isolation: Isolation = "linux"

    @property
    def unsafe(self) -> bool:
        """True when the run had no OS walls (asked for by name)."""
        return self.isolation == "unsafe"

    def to_json(self) -> dict[str, Any]:
        """The documented `sandbox run --json` document."""
        doc = self.model_dump(exclude={"isolation"})
        doc["unsafe"] = self.unsafe
        return doc
