"""`llamapipe sessions`: the saved conversations listed, shown, exported and removed."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from llamapipe_app.commands import common
from llamapipe_app.commands.common import JsonFlag, err, out, print_json
from pipelines.errors import UsageError
from pipelines.settings import load_settings

sessions_app = typer.Typer(
    help="Saved conversations: list them, show one, remove one.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@sessions_app.callback()
def sessions(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List saved sessions, most recent first."""
    if ctx.invoked_subcommand is not None:
        return
    found = common.toolkit(load_settings()).store().sessions()
    if as_json:
        print_json({"sessions": [_with_iso_times(s.to_json()) for s in found]})
        return
    if not found:
        err.print("no sessions yet: `llamapipe chat` starts one")
        return
    table = Table("session", "messages", "last used", "first message", header_style="bold")
    for s in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        first = s.first.replace("\n", " ")
        table.add_row(s.name, str(s.messages), when, first[:60] + ("…" if len(first) > 60 else ""))
    out.print(table)


def _with_iso_times(doc: dict[str, Any]) -> dict[str, Any]:
    """`created` and `updated` as ISO 8601 local times with their UTC offset, for people and
    for tools alike (the store keeps epoch seconds)."""
    for key in ("created", "updated"):
        doc[key] = datetime.fromtimestamp(doc[key]).astimezone().isoformat(timespec="seconds")
    return doc


@sessions_app.command("show")
def show_session(
    name: Annotated[str, typer.Argument(help="The session's name.")], as_json: JsonFlag = False
) -> None:
    """Print a session's messages."""
    store = common.toolkit(load_settings()).store()
    messages = store.messages(name)
    if as_json:
        print_json(
            {"session": name, "system": store.system(name),
             "messages": [m.to_json() for m in messages]}
        )  # fmt: skip
        return
    system = store.system(name)
    if system:
        out.print(f"[dim]system:[/dim] {system}", highlight=False)
    for m in messages:
        who = "[bold cyan]you[/bold cyan]" if m.role == "user" else "[bold green]model[/bold green]"
        stopped = " [dim](stopped)[/dim]" if m.meta.get("stopped") else ""
        out.print(f"{who}{stopped}")
        out.print(m.content, markup=False, highlight=False)


@sessions_app.command("export")
def export_sessions(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Sessions to export (default: all).")
    ] = None,
    form: Annotated[
        str,
        typer.Option("--format", help="dialogs (everyday-dialog JSON) | messages (chat JSONL)."),
    ] = "messages",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
) -> None:
    """Export saved conversations as a dataset, for fine-tuning or a `dialog` eval."""
    from pipelines.chat.dialogs import export

    if form not in ("dialogs", "messages"):
        raise UsageError(f"unknown format {form!r}", hint="--format dialogs or --format messages")
    store = common.toolkit(load_settings()).store()
    for name in names or []:
        store.system(name)  # each named one exists, or one clear error
    text = export(store, names or [], form)  # type: ignore[arg-type]
    if output is None:
        sys.stdout.write(text)
        return
    from pipelines.inputs import writable_folder

    writable_folder(output.parent if str(output.parent) else Path("."), "the output folder")
    output.write_text(text, encoding="utf-8")
    count = text.count("\n") if form == "messages" else text.count('"conversation"')
    err.print(f"wrote {count} conversation(s) to {output}")


@sessions_app.command("rm")
def remove_session(
    names: Annotated[list[str], typer.Argument(help="Sessions to remove.")],
    as_json: JsonFlag = False,
) -> None:
    """Remove sessions and their messages."""
    store = common.toolkit(load_settings()).store()
    for name in names:  # all known before any goes: a typo removes nothing
        store.system(name)
    removed = {name: store.delete(name) for name in names}
    if as_json:
        print_json({"removed": [{"session": n, "messages": c} for n, c in removed.items()]})
        return
    for name, count in removed.items():
        err.print(f"removed {name} ({count} messages)")
