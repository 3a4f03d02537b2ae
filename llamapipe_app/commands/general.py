"""`llamapipe config` and `models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from commands.common import (
    JsonFlag,
    err,
    out,
    print_json,
    spinner,
)
from pipelines.errors import (
    LlamapipeError,
)
from pipelines.settings import Settings, describe_settings, load_settings

# -- commands --------------------------------------------------------------------------------


def config(as_json: JsonFlag = False) -> None:
    """Show every setting's effective value and where it came from."""
    settings = load_settings()
    rows = describe_settings(settings)
    path = settings.config_file
    if as_json:
        print_json(
            {"config_file": str(path), "config_file_exists": path.is_file(), "settings": rows}
        )
        return
    state = "" if path.is_file() else " [dim](not present)[/dim]"
    err.print(f"config file: {path}{state}")
    table = Table(header_style="bold", show_lines=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("meaning", ratio=1)
    for row in rows:
        style = "dim" if row["source"] == "default" else "green"
        value = json.dumps(row["value"], ensure_ascii=False)
        table.add_row(row["name"], value, f"[{style}]{row['source']}[/{style}]", row["description"])
    out.print(table)


def models(as_json: JsonFlag = False) -> None:
    """List backends: Ollama's and an OpenAI-compatible server's models, the embedded GGUF,
    and the auto choice."""
    from pipelines.backends import choose_backend, embedded_gguf, probe
    from pipelines.backends.embedded import llama_cpp_version
    from pipelines.backends.gguf import read_gguf_info
    from pipelines.backends.ollama import normalize_host

    settings = load_settings()
    host = normalize_host(settings.ollama_host)
    with spinner(f"Asking Ollama at {host}..."):
        status = probe(host, settings.probe_timeout)
    served = _openai_models(settings)
    embedded: dict[str, Any] = {"llama_cpp": llama_cpp_version(), "llama_cpp_amx": None}
    if embedded["llama_cpp"]:
        from pipelines.backends.llama_build import has_amx

        embedded["llama_cpp_amx"] = has_amx()  # then models load with extra buffers off
    try:
        info = read_gguf_info(embedded_gguf(settings))
        embedded.update(
            path=str(info.path),
            size_bytes=info.size_bytes,
            architecture=info.architecture,
            name=info.name,
            size_label=info.size_label,
            parameters=info.parameters,
            context_length=info.context_length,
            error=None,
        )
    except LlamapipeError as exc:
        embedded.update(path=str(settings.gguf or ""), error=str(exc))
    try:
        choice, reason, _ = choose_backend(settings.model_copy(update={"backend": "auto"}))
    except LlamapipeError as exc:
        choice, reason = None, str(exc)
    document = {
        "ollama": {
            "host": host,
            "reachable": status.reachable,
            "version": status.version,
            "error": status.error,
            "model": settings.ollama_model,
            "has_model": status.has_model(settings.ollama_model),
            "models": status.models,
        },
        "openai": served,
        "embedded": embedded,
        "auto": {"choice": choice, "reason": reason},
    }
    if as_json:
        print_json(document)
        return
    _print_models(document)


def _openai_models(settings: Settings) -> dict[str, Any]:
    """What the OpenAI-compatible server at `openai_base_url` serves (never the key)."""
    from pipelines.backends.openai_compat import api_key, normalize_base_url, probe_server

    base_url = normalize_base_url(settings.openai_base_url)
    timeout = settings.timeout if settings.backend == "openai" else settings.probe_timeout
    with spinner(f"Asking {base_url}..."):
        status = probe_server(base_url, api_key(settings.openai_api_key_env), timeout)
    model = settings.openai_model or next(iter(status.model_names), "")
    return {
        "base_url": base_url,
        "configured": settings.backend == "openai"
        or settings.origin("openai_base_url") != "default",
        "reachable": status.reachable,
        "error": status.error,
        "api_key_env": settings.openai_api_key_env,
        "api_key_set": api_key(settings.openai_api_key_env) is not None,
        "model": model,
        "has_model": status.has_model(model),
        "models": status.models,
    }


def _print_openai(served: dict[str, Any]) -> None:
    if served["reachable"] and not served["error"]:
        out.print(f"[b]openai[/b]   {served['base_url']}  [green]reachable[/green]")
        table = Table("model", "context", "owned by", header_style="bold")
        for m in served["models"]:
            table.add_row(m["id"], str(m["max_model_len"] or ""), m["owned_by"] or "")
        out.print(table if served["models"] else "  serves no models")
    elif served["configured"] or served["reachable"]:
        key = "" if served["api_key_set"] else f", ${served['api_key_env']} not set"
        out.print(
            f"[b]openai[/b]   {served['base_url']}  [red]not usable[/red] ({served['error']}{key})"
        )


def _print_models(doc: dict[str, Any]) -> None:
    ollama, embedded = doc["ollama"], doc["embedded"]
    if ollama["reachable"]:
        out.print(
            f"[b]ollama[/b]   {ollama['host']}  [green]reachable[/green] "
            f"(version {ollama['version']})"
        )
        table = Table("model", "size", "family", "parameters", "quantization", header_style="bold")
        for m in ollama["models"]:
            size = f"{(m['size_bytes'] or 0) / 1e9:.1f} GB"
            table.add_row(
                m["name"],
                size,
                m["family"] or "",
                m["parameter_size"] or "",
                m["quantization"] or "",
            )
        out.print(table if ollama["models"] else "  no models pulled yet")
    else:
        out.print(f"[b]ollama[/b]   {ollama['host']}  [red]not reachable[/red] ({ollama['error']})")
    _print_openai(doc["openai"])
    if embedded.get("error"):
        out.print(f"[b]embedded[/b] [red]{embedded['error']}[/red]")
    else:
        out.print(
            f"[b]embedded[/b] {embedded['path']}\n"
            f"         {Path(embedded['path']).stem} · {embedded['architecture']} · "
            f"{embedded['parameters'] / 1e6:.0f}M parameters · "
            f"{embedded['size_bytes'] / 1e6:.0f} MB · "
            f"context {embedded['context_length']}"
        )
    llama = embedded["llama_cpp"] or "[red]not installed[/red]"
    if embedded["llama_cpp_amx"]:  # see pipelines/backends/llama_build.py
        llama += (
            " [yellow](built with AMX kernels: loaded with extra buffer types off; "
            "`make install` rebuilds it without them)[/yellow]"
        )
    elif embedded["llama_cpp"]:
        llama += " (no AMX kernels)"
    out.print(f"         llama-cpp-python {llama}")
    out.print(f"[b]auto[/b]     → {doc['auto']['choice']}: {doc['auto']['reason']}")
