"""The chat REPL: reading messages (readline editing and history, a message of several
lines between two lines of three double quotes), the /commands, and Ctrl-C that stops an
answer without leaving the REPL."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamapipe_app.commands.common import err, out
from pipelines.errors import LlamapipeError, UsageError

if TYPE_CHECKING:
    from pipelines.settings import Settings

HELP = "\n".join(
    [
        "commands:",
        "  /help            this list",
        "  /pal QUESTION    answer with a program the model writes, run in the sandbox",
        "  /program         show the program behind the last /pal answer",
        "  /reset           forget this session's turns (the system prompt stays)",
        "  /system TEXT     set the system prompt (empty: none)",
        "  /save NAME       give this session a name (it is saved as you go)",
        "  /exit            leave (or exit, quit, Ctrl-D); Ctrl-C stops an answer",
        '  """              a message of several lines, up to a line of """',
    ]
)


LEAVE = ("exit", "quit", "/exit", "/quit")  # typed alone, these leave rather than ask
FENCE = '"""'  # a line starting with it opens a multi-line message; a line of it ends one


def run(store: Any, current: Any, responder: Any, settings: Settings, verbose: bool) -> None:
    """Talk until the user leaves: each message answered by `responder` (plain or RAG chat)
    into `current`'s session, /commands run, Ctrl-C stopping an answer, not the REPL."""
    from pipelines.backends.describe import describe_model

    err.print(
        f"[dim]session {current.name} · {describe_model(responder.model)[1]} · /help for "
        "commands, Ctrl-D to leave[/dim]",
        highlight=False,
    )
    earlier = store.messages(current.name)
    if earlier:
        err.print(f"[dim]({len(earlier)} earlier messages in this session)[/dim]")
    with (
        _line_editing(settings.data_dir / "chat_history"),
        _every_ctrl_c_interrupts(),
        contextlib.closing(responder),
    ):
        while (message := _read_message()) is not None:
            if not message:
                continue
            if message.lower() in LEAVE:
                break
            if message.startswith("/"):
                name, leave = _command(store, current.name, message, responder)
                current.named |= name != current.name
                current.name = name
                if leave:
                    break
                continue
            try:
                responder.respond(current.name, message, as_json=False, verbose=verbose)
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                err.print(f"[dim](stopped{responder.on_stop})[/dim]")
            except UsageError as exc:  # e.g. a message too long for the window: say, go on
                err.print(f"[red]{exc.message}[/red] ({exc.hint})", highlight=False)


def _read_message() -> str | None:
    """The next message, stripped ("" for nothing to send), or None at Ctrl-D. A line that
    starts with FENCE opens a message of several lines, ended by a line of FENCE alone (or
    Ctrl-D); Ctrl-C drops what was typed, as at the prompt."""
    try:
        line = input("› ")
        if not line.strip().startswith(FENCE):
            return line.strip()
        lines = [line.strip()[len(FENCE) :]]
        while True:
            try:
                more = input("… ")
            except EOFError:
                sys.stdout.write("\n")
                break
            if more.strip() == FENCE:
                break
            lines.append(more)
        return "\n".join(lines).strip()
    except EOFError:  # Ctrl-D at the prompt
        sys.stdout.write("\n")
        return None
    except KeyboardInterrupt:  # Ctrl-C: a fresh line, as shells do
        sys.stdout.write("\n")
        return ""


def _command(store: Any, name: str, line: str, responder: Any) -> tuple[str, bool]:
    """Run a /command; (the session's name now, whether to leave)."""
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    if command in ("/exit", "/quit"):
        return name, True
    if command == "/pal":
        try:
            responder.pal(name, argument)
        except KeyboardInterrupt:
            err.print("[dim](stopped)[/dim]")
        except LlamapipeError as exc:  # no sandbox here, the model failed...: say, go on
            responder.drop_sandbox()
            err.print(f"[red]{exc.message}[/red]", highlight=False)
            if exc.hint:
                err.print(f"[dim]hint: {exc.hint}[/dim]", highlight=False)
    elif command == "/program":
        shown = responder.last_program or "(no /pal answer yet)"
        out.print(shown, markup=False, highlight=False)
    elif command == "/help":
        err.print(HELP, markup=False, highlight=False)
    elif command == "/reset":
        store.clear(name)
        err.print("[dim](this session's turns are forgotten)[/dim]")
    elif command == "/system":
        store.set_system(name, argument)
        err.print(f"[dim](system prompt {'set' if argument else 'removed'})[/dim]")
    elif command == "/save":
        if not argument:
            err.print(f"[dim](saved as you go, as {name}; /save NAME renames it)[/dim]")
        else:
            try:
                store.rename(name, argument)
            except UsageError as exc:
                err.print(f"[red]{exc.message}[/red]")
                return name, False
            err.print(f"[dim](saved as {argument})[/dim]")
            return argument, False
    else:
        err.print(f"[red]unknown command {command}[/red] (/help lists them)")
    return name, False


@contextlib.contextmanager
def _line_editing(history: Path) -> Iterator[None]:
    """readline: arrows, editing and history (kept across sessions) for `input()`; wide
    characters such as Hangul edit as one column pair each in a UTF-8 locale."""
    try:
        import readline
    except ImportError:  # Python built without it: plain input() still works
        yield
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(1000)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history)


@contextlib.contextmanager
def _every_ctrl_c_interrupts() -> Iterator[None]:
    """The CLI ignores a second Ctrl-C while a command stops; in a REPL each one counts."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
