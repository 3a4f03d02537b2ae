"""llamapipe: composable LLM pipelines on a locally served Llama.

    from pipelines import load_settings, load_backend
    backend = load_backend(load_settings({"backend": "embedded"}))
    print(backend.chat.invoke("Hello!").content)

Submodules: `settings`, `errors`, `backends` (Ollama / embedded llama.cpp); `Toolkit`
(pipelines.toolkit) builds the RAG, PAL and chat pipelines from settings.
Names below are imported lazily, so `import pipelines` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "pipelines.settings",
    "load_settings": "pipelines.settings",
    "Backend": "pipelines.backends",
    "load_backend": "pipelines.backends",
    "LlamapipeError": "pipelines.errors",
    "Toolkit": "pipelines.toolkit",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
