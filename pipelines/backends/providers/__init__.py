"""The built-in backends, one module each, each named as its module; `auto` tries them in
this order (those that allow it: Ollama, then the embedded model). A new backend is a module
here and a name below.

These names are all the registry needs to list the backends (`--backend`'s help, the
`backend` setting's choices), so `llamapipe --help` imports none of the modules, nor the
pydantic their settings need: a module is imported when its backend is first asked for
more than its name (`BUILT_IN` imports them all)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.backends.provider import Provider

    BUILT_IN: tuple[Provider, ...]

NAMES = ("ollama", "embedded", "openai")


def load(name: str) -> Provider:
    """The provider declared in module `name` (its `PROVIDER`)."""
    provider: Provider = importlib.import_module(f"{__name__}.{name}").PROVIDER
    return provider


def __getattr__(attr: str) -> Any:
    if attr == "BUILT_IN":  # the providers themselves, in order
        return tuple(load(name) for name in NAMES)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
