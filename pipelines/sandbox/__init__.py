"""Run model-written Python behind OS-level walls, in milliseconds.

    from pipelines.sandbox import Sandbox, Limits
    with Sandbox(limits=Limits(timeout=2)) as sb:
        result = sb.run("def solution():\n    return 6 * 7")
    result.ok, result.result        # True, 42

See the README's "Security model" for what the walls promise and what they do not.
"""

from pipelines.sandbox.limits import DEFAULT_MODULES, Limits
from pipelines.sandbox.result import ErrorInfo, SandboxResult
from pipelines.sandbox.sandbox import (
    Sandbox,
    SandboxError,
    SandboxUnavailableError,
    check_system,
)

__all__ = [
    "DEFAULT_MODULES",
    "ErrorInfo",
    "Limits",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailableError",
    "check_system",
]
