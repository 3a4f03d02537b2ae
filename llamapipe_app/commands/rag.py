"""`llamapipe rag ingest`, `ask`, `sources` and `remove`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

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
    progress_bar,
    with_model_flags,
)
from llamapipe_app.commands.shown import print_checked_answer, source, streams_answers
from pipelines.errors import EXIT_FAILED, EXIT_OK, Interrupted, UsageError
from pipelines.settings import load_settings

if TYPE_CHECKING:
    from pipelines.settings import Settings

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
    """Add documents to the index; unchanged files are skipped, changed ones replaced.

    Each file is committed as it is done, and its line printed then;
    Ctrl-C keeps the files listed."""
    settings = load_settings()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(
            f"no such file or folder: {', '.join(missing)}",
            hint="check the paths; nothing was added",
        )
    from pipelines.rag.documents import walk_all

    walked = walk_all(paths)
    if not walked.files and not walked.given_unsupported:  # before an index is made for nothing
        passed = f" (passed over {len(walked.unsupported)} files of other types)"
        raise UsageError(
            f"found no documents in {', '.join(map(str, paths))}"
            + (passed if walked.unsupported else ""),
            hint="llamapipe reads .txt, .md, .html and .pdf files (hidden ones are skipped)",
        )
    if walked.unsupported and not as_json:
        types = ", ".join(walked.unsupported_types())
        err.print(
            f"[dim]passed over {len(walked.unsupported)} files (types {types}): llamapipe reads "
            ".txt, .md, .html and .pdf[/dim]",
            highlight=False,
        )
    kit = common.toolkit(settings)
    idx = kit.index_for_ingest(index)
    say_retrieval(kit)
    sizes = {str(p.resolve()): _size(p) for p in walked.files}
    _ingest(idx, paths, sizes, as_json)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _ingest(idx: Any, paths: list[Path], sizes: dict[str, int], as_json: bool) -> None:
    """Ingest under a per-file bar, each file's line printed as it is committed; Ctrl-C
    says truthfully what is in the index."""
    done: list[Any] = []  # statuses heard of, in order: what was printed
    vectors = {"done": 0, "total": 0}
    total_files = len(sizes)
    seen = 0

    with progress_bar("indexing", sum(sizes.values()) or None, rate="bytes") as bar:

        def show(status: Any) -> None:
            nonlocal seen
            done.append(status)
            if status.source in sizes:
                seen += 1
                bar.advance(sizes[status.source], count=f"{seen}/{total_files} files")
            if not as_json:
                style = _STYLE.get(status.status, "")
                why = f" ({status.reason})" if status.reason else ""
                chunks = f" {status.chunks} chunks" if status.chunks else ""
                err.print(
                    f"[{style}]{status.status:9}[/{style}] {source(status.source)}{chunks}{why}",
                    highlight=False,
                )

        def on_vectors(added: int, total: int) -> None:
            if not vectors["total"]:
                bar.restart("vectors", total, count=f"0/{total} chunks")
            vectors.update(done=added, total=total)
            bar.update(completed=added, count=f"{added}/{total} chunks")

        try:
            report = idx.ingest([str(p) for p in paths], on_file=show, on_vectors=on_vectors)
        except KeyboardInterrupt:
            raise _interrupted(done, vectors, total_files, as_json) from None
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


def _interrupted(
    done: list[Any], vectors: dict[str, int], total_files: int, as_json: bool
) -> Interrupted:
    """What an interrupted ingest kept: exactly the files whose lines were printed as added,
    updated or unchanged (each was committed before its line); chunks left without vectors."""
    kept = [s for s in done if s.status in ("added", "updated", "unchanged")]
    lacking = vectors["total"] - vectors["done"]
    if as_json:
        print_json({
            "interrupted": True, "files": [s.__dict__ for s in done],
            "committed": [s.source for s in kept], "chunks_without_vectors": lacking,
        })  # fmt: skip
    listed = "listed in the JSON output" if as_json else "listed above"
    if not kept:
        message = "no file was committed yet; the index is as it was"
    else:
        n = len(kept)
        message = (
            f"the {n} file{'s' if n != 1 else ''} {listed} as added, updated or unchanged "
            f"{'are' if n != 1 else 'is'} in the index"
        )
        if total_files > len(kept):
            message += "; no other file was added"
    if lacking:
        message += (
            f"; {lacking} chunks in it have no vectors yet (dense retrieval misses them "
            "until they do)"
        )
    return Interrupted(
        message,
        hint="run the same command again: committed files are skipped as unchanged"
        + (", and the missing vectors are added" if lacking else ""),
    )


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
    with common.first_token_spinner():  # "reading the prompt (~N tokens)" until it answers
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
