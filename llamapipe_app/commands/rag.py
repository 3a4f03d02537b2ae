"""`llamapipe rag ingest`, `ask`, `sources` and `remove`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from llamapipe_app.commands import common
from llamapipe_app.commands.common import (
    ContinueFlag,
    IndexFlag,
    JsonFlag,
    KFlag,
    LinesFlag,
    SessionFlag,
    VerboseFlag,
    err,
    out,
    print_json,
    spinner,
    with_model_flags,
)
from llamapipe_app.commands.shown import print_checked_answer, source, streams_answers
from pipelines.errors import EXIT_FAILED, EXIT_OK, Interrupted, UsageError
from pipelines.settings import Settings, load_settings

app = typer.Typer(
    help="Answers from your documents, with citations checked against them.",
    no_args_is_help=True,
)


def say_retrieval(kit: Any) -> None:
    """How retrieval will work (dense too, or BM25 only), and why."""
    err.print(f"[dim]dense retrieval: {kit.embeddings()[2]}[/dim]", highlight=False)


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
    kit = common.toolkit(settings)
    idx = kit.index_for_ingest(index)
    say_retrieval(kit)

    def show(status: Any) -> None:
        if not as_json:
            style = _STYLE.get(status.status, "")
            why = f" ({status.reason})" if status.reason else ""
            chunks = f" {status.chunks} chunks" if status.chunks else ""
            err.print(
                f"[{style}]{status.status:9}[/{style}] {source(status.source)}{chunks}{why}",
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
    k: KFlag = 5,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
    *,
    settings: Settings,
) -> None:
    """Answer from the indexed documents: the answer, then its checked sources."""
    from pipelines.rag import RAGAnswer
    from prompts import show

    question = common.text_arg(question)
    kit = common.toolkit(settings)
    idx = kit.index(index)  # a missing or empty index fails before the model loads
    say_retrieval(kit)
    common.load_model(kit)
    rag = kit.rag(k=k, index=idx)
    if verbose:
        prompt = rag.prepare(question).prompt
        err.print(
            show(prompt) if prompt else "(nothing relevant retrieved: no prompt)", markup=False
        )
    answer: RAGAnswer | None = None
    streamed = streams_answers() and not as_json
    for item in rag.stream(question):
        if isinstance(item, RAGAnswer):
            answer = item
        elif streamed:
            sys.stdout.write(item)
            sys.stdout.flush()
    assert answer is not None
    if as_json:
        print_json(answer.to_json())
        return
    if streamed:
        sys.stdout.write("\n")
    print_checked_answer(answer, settings, streamed=streamed)
    raise typer.Exit(EXIT_OK)


@app.command("chat")
@with_model_flags
def rag_chat(
    prompt: Annotated[
        Optional[str],
        typer.Argument(help="One turn; none: interactive on a terminal, else standard input."),
    ] = None,
    index: IndexFlag = None,
    k: KFlag = 5,
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
    idx = common.toolkit(load_settings()).index(index, dense=False, allow_empty=True)
    rows = idx.sources()
    if as_json:
        print_json({"index": str(idx.path), "sources": rows})
        return
    table = Table("source", "kind", "chunks", "bytes", header_style="bold")
    for r in rows:
        table.add_row(source(r["source"]), r["kind"], str(r["chunks"]), str(r["size"]))
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
    idx = common.toolkit(load_settings()).index(index, dense=False, allow_empty=True)
    statuses = idx.remove(sources_)
    if as_json:
        print_json({"files": [s.__dict__ for s in statuses]})
    else:
        for s in statuses:
            why = f" ({s.reason})" if s.reason else ""
            err.print(f"{s.status:9} {source(s.source)}{why}", highlight=False)
    if not any(s.status == "removed" for s in statuses):
        raise typer.Exit(EXIT_FAILED)
