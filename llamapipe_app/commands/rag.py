"""`llamapipe rag ingest`, `ask`, `sources` and `remove`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from llamapipe_app.commands import common
from llamapipe_app.commands.chat import ContinueFlag, LinesFlag, SessionFlag
from llamapipe_app.commands.common import (
    JsonFlag,
    VerboseFlag,
    announce,
    err,
    out,
    print_json,
    spinner,
    with_model_flags,
)
from pipelines.errors import EXIT_FAILED, EXIT_OK, Interrupted, UsageError
from pipelines.settings import Settings, load_settings

app = typer.Typer(
    help="Answers from your documents, with citations checked against them.",
    no_args_is_help=True,
)

IndexFlag = Annotated[
    Optional[Path],
    typer.Option(
        "--index", help="Index folder (default: <data_dir>/index; see `llamapipe config`)."
    ),
]


def open_index(
    settings: Settings, index: Path | None, dense: bool = False, create: bool = False
) -> Any:
    """The index (see pipelines.rag.opening); says how retrieval will work when `dense`."""
    from pipelines.rag.opening import open_index as opened

    idx, why = opened(settings, index, dense=dense, create=create)
    if dense:
        err.print(f"[dim]dense retrieval: {why}[/dim]", highlight=False)
    return idx


def _shown(source: str) -> str:
    from pipelines.rag.index import source_name

    return source_name(source)


_STYLE = {"added": "green", "updated": "cyan", "unchanged": "dim", "skipped": "yellow",
          "removed": "magenta"}  # fmt: skip


@app.command("ingest")
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (.txt .md .html .pdf).")],
    index: IndexFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Add documents to the index; unchanged files are skipped, changed ones replaced."""
    settings = load_settings()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(
            f"no such file or folder: {', '.join(missing)}",
            hint="check the paths; nothing was added",
        )
    from pipelines.rag.index import walk

    found, problems = walk(paths)
    if not found and not problems:  # before an index is made for nothing
        raise UsageError(
            f"found no documents in {', '.join(map(str, paths))}",
            hint="llamapipe reads .txt, .md, .html and .pdf files (hidden ones are skipped)",
        )
    idx = open_index(settings, index, dense=True, create=True)

    def show(status: Any) -> None:
        if not as_json:
            style = _STYLE.get(status.status, "")
            why = f" ({status.reason})" if status.reason else ""
            chunks = f" {status.chunks} chunks" if status.chunks else ""
            err.print(
                f"[{style}]{status.status:9}[/{style}] {_shown(status.source)}{chunks}{why}",
                highlight=False,
            )

    try:
        with spinner("Reading and indexing..."):
            report = idx.ingest([str(p) for p in paths], on_file=show)
    except KeyboardInterrupt:
        raise Interrupted(
            "files listed above as added or updated are in the index; no other file was "
            "added (an ingest commits its files together)",
            hint="run the same command again: unchanged files are skipped",
        ) from None
    doc = report.to_json()
    doc["index"] = str(idx.path)
    if as_json:
        print_json(doc)
    else:
        t = doc["totals"]
        out.print(
            f"{t['added']} added, {t['updated']} updated, {t['unchanged']} unchanged, "
            f"{t['skipped']} skipped; {t['chunks_added']} chunks in {doc['seconds']:.2f} s"
            f" -> {idx.path}"
        )
    if report.files and report.count("skipped") == len(report.files):
        raise typer.Exit(EXIT_FAILED)


@app.command("ask")
@with_model_flags
def ask(
    question: Annotated[str, typer.Argument(help="The question; '-' reads standard input.")],
    index: IndexFlag = None,
    k: Annotated[int, typer.Option("--k", help="Passages to retrieve.", min=1, max=50)] = 5,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Answer from the indexed documents; stream the answer, then list the sources."""
    from pipelines.rag import RAG, RAGAnswer
    from prompts import show

    question = common.text_arg(question)
    idx = open_index(settings, index, dense=True)
    if not idx.sources():
        raise UsageError(
            f"the index at {idx.path} is empty", hint="add documents: llamapipe rag ingest PATH"
        )
    backend = common.load_model(settings)
    announce(backend)
    rag = RAG(model=backend.chat, index=idx, k=k, backend=backend.name)
    if verbose:
        prompt = rag.prepare(question).prompt
        err.print(
            show(prompt) if prompt else "(nothing relevant retrieved: no prompt)", markup=False
        )
    answer: RAGAnswer | None = None
    for item in rag.stream(question):
        if isinstance(item, RAGAnswer):
            answer = item
        elif not as_json:
            sys.stdout.write(item)
            sys.stdout.flush()
    assert answer is not None
    if as_json:
        print_json(answer.to_json())
        return
    sys.stdout.write("\n")
    print_checked_answer(answer, settings)
    raise typer.Exit(EXIT_OK)


def print_checked_answer(answer: Any, settings: Settings) -> None:
    """After the streamed text: the checked answer with its citations, and what was off."""
    if not answer.abstained:
        out.rule("checked answer", style="dim")
        out.print(answer.answer, highlight=False)
    for c in answer.citations:
        page = f" p.{c.page}" if c.page else ""
        where = f"{_shown(c.source)}{page} [{c.start}:{c.end}]"
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


@app.command("chat")
@with_model_flags
def rag_chat(
    prompt: Annotated[
        Optional[str],
        typer.Argument(help="One turn; none: interactive on a terminal, else standard input."),
    ] = None,
    index: IndexFlag = None,
    k: Annotated[int, typer.Option("--k", help="Passages to retrieve.", min=1, max=50)] = 5,
    session: SessionFlag = None,
    resume: ContinueFlag = False,
    lines: LinesFlag = False,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Chat with your documents: follow-ups are made standalone, every answer is checked."""
    from llamapipe_app.commands.chat import converse

    converse(
        settings, prompt, session=session, resume=resume, interactive=False, lines=lines,
        as_json=as_json, verbose=verbose, rag_index=index or settings.data_dir / "index", k=k,
    )  # fmt: skip


@app.command("sources")
def sources(index: IndexFlag = None, as_json: JsonFlag = False) -> None:
    """List the indexed documents."""
    idx = open_index(load_settings(), index)
    rows = idx.sources()
    if as_json:
        print_json({"index": str(idx.path), "sources": rows})
        return
    table = Table("source", "kind", "chunks", "bytes", header_style="bold")
    for r in rows:
        table.add_row(_shown(r["source"]), r["kind"], str(r["chunks"]), str(r["size"]))
    out.print(table if rows else f"no documents in {idx.path}")


@app.command("remove")
def remove(
    sources_: Annotated[
        list[str], typer.Argument(metavar="SOURCE...", help="Sources as `rag sources` lists them.")
    ],
    index: IndexFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Drop documents (e.g. deleted files) and their chunks from the index."""
    idx = open_index(load_settings(), index)
    statuses = idx.remove(sources_)
    if as_json:
        print_json({"files": [s.__dict__ for s in statuses]})
    else:
        for s in statuses:
            why = f" ({s.reason})" if s.reason else ""
            err.print(f"{s.status:9} {_shown(s.source)}{why}", highlight=False)
    if not any(s.status == "removed" for s in statuses):
        raise typer.Exit(EXIT_FAILED)
