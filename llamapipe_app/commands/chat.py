"""`llamapipe chat`: one prompt, a saved conversation, or an interactive session."""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from llamapipe_app.commands import common, repl
from llamapipe_app.commands.common import (
    ContinueFlag,
    JsonFlag,
    LinesFlag,
    SessionFlag,
    VerboseFlag,
    err,
    print_json,
    spinner,
    with_model_flags,
)
from pipelines.errors import UsageError

if TYPE_CHECKING:
    from pipelines.settings import Settings


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
            repl.run(store, current, responder, settings, verbose)
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
