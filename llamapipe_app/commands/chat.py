"""`llamapipe chat`: one prompt, a saved conversation, or an interactive session."""

from __future__ import annotations

import contextlib
import itertools
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llamapipe_app.commands import common
from llamapipe_app.commands.common import (
    ContinueFlag,
    JsonFlag,
    LinesFlag,
    SessionFlag,
    VerboseFlag,
    err,
    out,
    print_json,
    spinner,
    with_model_flags,
)
from pipelines.errors import LlamapipeError, UsageError
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


@with_model_flags
def chat(
    prompt: Annotated[
        Optional[str],
        typer.Argument(
            help="What to ask; '-' reads standard input. None: a conversation, interactive "
            "on a terminal, else from standard input."
        ),
    ] = None,
    system: Annotated[
        Optional[str], typer.Option("--system", "-s", help="A system message.")
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Chat turn after turn (a REPL).")
    ] = False,
    session: SessionFlag = None,
    resume: ContinueFlag = False,
    lines: LinesFlag = False,
    rag: Annotated[
        Optional[Path],
        typer.Option("--rag", help="Chat with the documents of this index (as `rag chat`)."),
    ] = None,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Chat: one prompt, or a conversation that remembers (saved in sessions)."""
    if rag is not None:
        return converse(
            settings, prompt, session=session, resume=resume, interactive=interactive,
            lines=lines, as_json=as_json, verbose=verbose, system=system, rag_index=rag,
        )  # fmt: skip
    conversing = interactive or session is not None or resume or prompt is None
    if not conversing:
        return _one_shot(common.text_arg(prompt or ""), system, as_json, verbose, settings)
    converse(
        settings, prompt, session=session, resume=resume, interactive=interactive, lines=lines,
        as_json=as_json, verbose=verbose, system=system,
    )  # fmt: skip


def converse(
    settings: Settings,
    prompt: str | None,
    *,
    session: str | None,
    resume: bool,
    interactive: bool,
    lines: bool,
    as_json: bool,
    verbose: bool,
    system: str | None = None,
    rag_index: Path | None = None,
    k: int = 5,
) -> None:
    """A saved conversation, plain or over an index: the REPL on a terminal, else the turns
    given (the prompt, or standard input)."""
    if interactive and not sys.stdin.isatty():
        raise UsageError(
            "--interactive needs a terminal, and standard input is not one",
            hint="pipe the turns without -i (one turn, or --lines for one per line)",
        )
    kit = common.toolkit(settings)
    store = kit.store()
    session = _session_asked(store, session, resume)
    if rag_index is not None:  # a missing or empty index fails before the model loads
        kit.index(rag_index)
        err.print(f"[dim]dense retrieval: {kit.embeddings()[2]}[/dim]", highlight=False)
    if prompt is not None:
        turns = [common.text_arg(prompt)]
    elif not (interactive or sys.stdin.isatty()):
        turns = _piped_turns(lines)
    else:
        turns = []
    responder = _responder(kit, rag_index, k)
    # Made only now, once there is something to say and a model to say it to; one this run
    # made that still has no turn when it ends is removed again.
    fresh = session is None or not store.exists(session)
    named = str(store.open(session, system) if session else store.create(system=system or ""))
    current = _Current(named, fresh)
    try:
        if not turns:
            _repl(store, current, responder, settings, verbose)
        else:
            _answer_turns(current.name, turns, responder, as_json, verbose)
    finally:
        kept = current.kept(store)
        if not kept:
            store.delete(current.name)
    if not turns:
        name = current.name
        err.print(
            f"[dim]saved as session {name}: llamapipe chat --session {name}[/dim]"
            if kept
            else "[dim](no turns, so no session was kept)[/dim]",
            highlight=False,
        )


class _Current:
    """The session a conversation writes to, and whether it must be kept when it ends:
    one that was there before, that /save named, or that has turns."""

    def __init__(self, name: str, fresh: bool) -> None:
        self.name = name
        self.fresh = fresh
        self.named = False

    def kept(self, store: Any) -> bool:
        return not self.fresh or self.named or bool(store.messages(self.name))


def _answer_turns(
    name: str, turns: list[str], responder: Any, as_json: bool, verbose: bool
) -> None:
    err.print(f"[dim]session: {name}[/dim]", highlight=False)
    replies = []
    for message in turns:
        started = time.perf_counter()
        reply = responder.respond(name, message, as_json=as_json, verbose=verbose)
        replies.append(_turn_json(reply, responder.backend, time.perf_counter() - started))
    if as_json:
        print_json({"session": name, "turns": replies})


def _turn_json(reply: Any, backend: Any, seconds: float, usage: Any = None) -> dict[str, Any]:
    """A turn as `chat --json` prints it, with the same keys for a one-shot prompt (its
    whole document, `session` null) as for each of a session's `turns`: `text` is the
    answer's text; `answer` is that text too, or for RAG chat the checked answer as
    `rag ask --json` prints it; `usage` is known for one-shot prompts only."""
    doc = reply.model_dump()
    text = reply.answer
    if not isinstance(text, str):  # a RAG chat turn
        doc.update(answer=text.to_json(), backend=text.backend, model=text.model, stopped=False)
        text = text.answer
    return {**doc, "text": text, "reason": backend.reason, "usage": usage,
            "seconds": round(seconds, 3)}  # fmt: skip


def _session_asked(store: Any, session: str | None, resume: bool) -> str | None:
    """The session the flags name (`--continue`: the latest with turns), or None for a new
    one; mistakes are found before any model loads."""
    if session is not None and resume:
        raise UsageError("--session and --continue both name a session", hint="give one of them")
    if not resume:
        return session
    last = store.last()
    if last is None:
        raise UsageError("there is no session to continue", hint="start one: llamapipe chat")
    return str(last)


def _piped_turns(lines: bool) -> list[str]:
    from pipelines.inputs import decode_text

    text = decode_text(sys.stdin.buffer.read(), "standard input")
    turns = [line.strip() for line in text.splitlines()] if lines else [text.strip()]
    turns = [t for t in turns if t]
    if not turns:
        raise UsageError(
            "standard input is empty", hint='pipe some text, or run `llamapipe chat "Hello"`'
        )
    return turns


class _Responder:
    """What both kinds of chat share: `/pal`, answered by a program run in the sandbox."""

    on_stop = ""

    def __init__(self, kit: Any, conversation: Any) -> None:
        self.kit = kit
        self.conversation = conversation
        self.settings = kit.settings
        self.backend = kit.backend()
        self.model = self.backend.chat
        self.last_program: str | None = None

    def pal(self, session: str, question: str) -> None:
        """Answer with PAL; the question and answer join the session (the program in meta)."""
        if not question.strip():
            err.print("[red]/pal needs a question[/red] (e.g. /pal 17 * 23 + 4?)")
            return
        with spinner("Writing and running a program..."):
            result = self.kit.pal().invoke(question)
        self.last_program = result.program
        text = self.kit.save_pal_turn(session, question, result)
        if result.ok:
            sys.stdout.write(f"{text}\n")
            err.print("[dim](/program shows the program)[/dim]")
        else:
            err.print(f"[red]{text}[/red]", highlight=False)

    def drop_sandbox(self) -> None:
        """After a failed /pal: the next one builds its sandbox anew."""
        self.kit.drop_sandbox()

    def close(self) -> None:
        self.kit.close()


class _Chat(_Responder):
    """Plain chat turns: streamed, saved."""

    on_stop = "; what came is saved"

    def respond(self, session: str, message: str, *, as_json: bool, verbose: bool) -> Any:
        from pipelines.chat import ChatReply, ChatTurn

        turn = ChatTurn(session=session, message=message)
        if verbose:
            from prompts import show

            prompt, _, left_out = self.conversation.prompt(turn)
            err.print(show(prompt), markup=False, highlight=False)
            if left_out:
                err.print(f"[dim]({left_out} earlier messages left out to fit the window)[/dim]")
        reply = None
        with common.first_token_spinner():
            for item in self.conversation.stream(turn):
                if isinstance(item, ChatReply):
                    reply = item
                elif not as_json:
                    sys.stdout.write(item)
                    sys.stdout.flush()
        if not as_json:
            sys.stdout.write("\n")
        return reply


class _RAGChat(_Responder):
    """RAG chat turns: the follow-up made standalone, retrieved, answered, checked, saved."""

    on_stop = "; an unchecked answer is not saved"

    def respond(self, session: str, message: str, *, as_json: bool, verbose: bool) -> Any:
        from llamapipe_app.commands.shown import print_checked_answer, streams_answers
        from pipelines.chat import ChatTurn, RAGChatReply, Rewritten

        reply = None
        streamed = streams_answers() and not as_json
        with common.first_token_spinner():
            for item in self.conversation.stream(ChatTurn(session=session, message=message)):
                if isinstance(item, RAGChatReply):
                    reply = item
                elif isinstance(item, Rewritten):
                    if verbose and item != message.strip():
                        err.print(f"[dim]standalone question: {item}[/dim]", highlight=False)
                elif streamed:
                    sys.stdout.write(item)
                    sys.stdout.flush()
        assert reply is not None
        if streamed:
            sys.stdout.write("\n")
        if not as_json:
            print_checked_answer(reply.answer, self.settings, streamed=streamed)
        return reply


def _responder(kit: Any, index: Path | None, k: int) -> Any:
    common.load_model(kit)
    if index is None:
        return _Chat(kit, kit.conversation())
    return _RAGChat(kit, kit.conversation(index=index, k=k))


# -- the REPL --------------------------------------------------------------------------------


LEAVE = ("exit", "quit", "/exit", "/quit")  # typed alone, these leave rather than ask
FENCE = '"""'  # a line starting with it opens a multi-line message; a line of it ends one


def _repl(store: Any, current: _Current, responder: Any, settings: Settings, verbose: bool) -> None:
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


# -- one prompt, as before sessions -----------------------------------------------------------


def _one_shot(
    prompt: str, system: str | None, as_json: bool, verbose: bool, settings: Settings
) -> None:
    from pipelines.chat import ChatReply
    from prompts import load_prompt, show

    if not prompt.strip():
        raise UsageError("the prompt is empty", hint='pass some text, e.g. llamapipe chat "Hello"')
    backend = common.load_model(common.toolkit(settings))
    template = load_prompt("chat/default")
    variables = {"prompt": prompt, "system": system or ""}
    if verbose:
        err.print(show(template.invoke(variables)), markup=False, highlight=False)
    chain = template | backend.chat
    started = time.perf_counter()
    if as_json:
        with spinner(f"Generating with {backend.model}..."):
            message = chain.invoke(variables)
        reply = ChatReply(
            session="-", message=prompt, answer=message.text, history_used=0,
            history_left_out=0, backend=backend.name, model=backend.model,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        print_json({**_turn_json(reply, backend, seconds, message.usage_metadata), "session": None})
        return
    with common.reading_prompt(backend.chat, template.invoke(variables)):
        stream = chain.stream(variables)
        first = next(stream, None)
    with _ends_the_line():
        for chunk in itertools.chain([first] if first is not None else [], stream):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()


@contextlib.contextmanager
def _ends_the_line() -> Iterator[None]:
    """Streamed text ends with a newline, also when Ctrl-C stops it: the notice that follows
    (on stderr, the same terminal) starts a line of its own, after all the text."""
    try:
        yield
    finally:
        sys.stdout.write("\n")
        sys.stdout.flush()
