"""`llamapipe config` and `models`."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from llamapipe_app.commands.common import (
    JsonFlag,
    err,
    out,
    print_json,
    spinner,
)
from pipelines.errors import (
    LlamapipeError,
)
from pipelines.settings import describe_settings, load_settings

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
        style = "dim" if row["source"].startswith("default") else "green"
        value = json.dumps(row["value"], ensure_ascii=False)
        table.add_row(row["name"], value, f"[{style}]{row['source']}[/{style}]", row["description"])
    out.print(table)


def models(as_json: JsonFlag = False) -> None:
    """List the backends, their models and what `auto` would choose.

    Ollama's and an OpenAI-compatible server's models, and the embedded GGUF.
    """
    from pipelines.backends import REGISTRY, choose_backend

    settings = load_settings()
    document: dict[str, Any] = {}
    for provider in REGISTRY.providers():
        if provider.inventory is not None:
            with spinner(f"Asking {provider.name}..."):
                document[provider.name] = provider.inventory(settings)
    try:
        choice, reason, _ = choose_backend(settings.model_copy(update={"backend": "auto"}))
    except LlamapipeError as exc:
        choice, reason = None, str(exc)
    document["auto"] = {"choice": choice, "reason": reason}
    if as_json:
        print_json(document)
        return
    for provider in REGISTRY.providers():
        if provider.lines is not None and provider.name in document:
            for line in provider.lines(document[provider.name]):
                out.print(line)
    out.print(f"[b]auto[/b]     → {choice}: {reason}")
