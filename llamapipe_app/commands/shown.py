"""How answers are shown on the terminal, for every command that gives them: a RAG answer's
citations and warnings, a source's name, a PAL run's steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llamapipe_app.commands.common import err, out

if TYPE_CHECKING:
    from pipelines.settings import Settings


def source(name: str) -> str:
    """A source as the reader knows it (relative to where they are)."""
    from pipelines.rag.index import source_name

    return source_name(name)


def streams_answers() -> bool:
    """Whether answers are streamed to stdout as they come: on a terminal, where a person
    reads along. Piped, stdout gets each checked answer once, whole."""
    return out.is_terminal


def print_checked_answer(answer: Any, settings: Settings, *, streamed: bool) -> None:
    """What the check adds to an answer: its citations, and what was off. When the text was
    not `streamed` (stdout is piped), the checked answer's text first, so it is there once."""
    if not streamed:
        out.print(answer.answer, highlight=False, markup=False)
    if not answer.abstained:
        count = len(answer.citations)
        out.rule(f"checked answer: {count} citation{'' if count == 1 else 's'}", style="dim")
    for c in answer.citations:
        page = f" p.{c.page}" if c.page else ""
        where = f"{source(c.source)}{page} [{c.start}:{c.end}]"
        note = (
            " (attributed)"
            if c.attributed
            else ""
            if c.supported
            else " (does not clearly support it)"
        )
        out.print(f"[b][{c.n}][/b] {where}{note}\n    “{c.quote}”", highlight=False)
    if answer.passages_dropped or answer.passages_trimmed:
        err.print(
            f"[yellow]the context window ({settings.num_ctx} tokens) was full: "
            f"{answer.passages_dropped} retrieved passage(s) left out, "
            f"{answer.passages_trimmed} cut at a sentence end[/yellow] "
            "(--num-ctx gives the model more room, --k fewer passages)",
            highlight=False,
        )
    if answer.dropped_markers:
        err.print(
            f"[yellow]dropped {answer.dropped_markers} citation marker(s) "
            "that pointed at no source[/yellow]"
        )
    for sentence in answer.unsupported:
        err.print(f"[yellow]unsupported:[/yellow] {sentence}", highlight=False)


def print_pal_event(event: Any) -> None:
    """One step of a PAL run (a program ran, or none could be taken from the reply)."""
    where = (
        f"sample {event.sample + 1}, attempt {event.attempt + 1}"
        if event.sample is not None
        else ""
    )
    if event.kind == "ran":
        status = "[green]ran[/green]" if event.ok else f"[red]{event.error.type}[/red]"
        err.print(f"[dim]{where}:[/dim] {status}", highlight=False)
    elif event.kind == "generated" and event.error is not None:
        err.print(f"[dim]{where}:[/dim] [red]{event.error.type}[/red]", highlight=False)
