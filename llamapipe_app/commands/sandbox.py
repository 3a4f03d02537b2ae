"""`llamapipe sandbox run` and `llamapipe sandbox check`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

from llamapipe_app.commands.common import JsonFlag, err, out, print_json
from pipelines.errors import EXIT_FAILED, EXIT_OK, EXIT_UNSUPPORTED, Interrupted
from pipelines.inputs import decode_text, read_text
from pipelines.settings import load_settings

# -- sandbox ---------------------------------------------------------------------------------

app = typer.Typer(
    help="Run Python behind the OS walls PAL uses (namespaces, Landlock, seccomp, rlimits).",
    no_args_is_help=True,
)


@app.command("run")
def sandbox_run(
    file: Annotated[
        str, typer.Argument(help="The program; '-' (the default) reads standard input.")
    ] = "-",
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="Seconds it may run (default 5).")
    ] = None,
    memory: Annotated[
        Optional[int], typer.Option("--memory", help="MiB of memory it may use (default 256).")
    ] = None,
    allow_module: Annotated[
        Optional[list[str]],
        typer.Option("--allow-module", help="Also allow importing this module (repeatable)."),
    ] = None,
    isolation: Annotated[
        Optional[str],
        typer.Option("--isolation", help="linux (default) | unsafe: no OS walls, labelled so."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a program in a fresh sandboxed process; if it defines solution(), print its value.

    Exit code 0 when it ran and returned, 1 when it raised or was stopped,
    2 for bad input, 3 when this system cannot build the walls.
    """
    from pipelines.sandbox import Limits, Sandbox

    settings = load_settings({"sandbox_isolation": isolation} if isolation else {})
    code = _read_program(file)
    limits = Limits.from_settings(
        settings,
        timeout=timeout,
        memory_mb=memory,
        extra_modules=(*settings.sandbox_modules, *(allow_module or [])),
    )
    try:
        with Sandbox(limits, workers=0, isolation=settings.sandbox_isolation) as sandbox:
            result = sandbox.run(code)
    except KeyboardInterrupt:
        raise Interrupted("the program was stopped; none of its processes is left") from None
    if result.unsafe:
        err.print("[bold yellow]UNSAFE:[/bold yellow] ran without OS walls (--isolation unsafe)")
    if as_json:
        print_json({**result.to_json(), "engine": sandbox.engine})
    else:
        _print_run(result, sandbox.engine)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@app.command("check")
def sandbox_check(as_json: JsonFlag = False) -> None:
    """Show each wall's state on this machine, seen from inside a real run of each engine.

    Exit code 0 when every wall holds and both engines run, 3 otherwise.
    """
    from rich.table import Table

    from pipelines.sandbox.check import check_sandbox

    report = check_sandbox()
    if as_json:
        print_json(report.model_dump())
    else:
        colour = {"ok": "green", "missing": "red", "failed": "red", "not tried": "dim"}
        table = Table("wall", "state", "what a program meets", box=None, pad_edge=False)
        for wall in report.walls:
            state = f"[{colour[wall.state]}]{wall.state}[/{colour[wall.state]}]"
            table.add_row(wall.wall, state, wall.detail)
        out.print(table)
        for engine in report.engines:
            state = "[green]runs[/green]" if engine.ok else f"[red]fails[/red]: {engine.detail}"
            out.print(f"{engine.engine}: {state}", highlight=False)
        out.print(
            f"[dim]python {report.python}, caller uid {report.caller_uid}, "
            f"Linux {report.kernel}[/dim]",
            highlight=False,
        )
    raise typer.Exit(EXIT_OK if report.ok else EXIT_UNSUPPORTED)


def _read_program(file: str) -> str:
    if file == "-":
        return decode_text(sys.stdin.buffer.read(), "standard input")
    return read_text(file, "program")


def _print_run(result: Any, engine: str) -> None:
    if result.stdout:
        sys.stdout.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
    if result.stderr:
        err.print(result.stderr, markup=False, highlight=False, end="")
    if result.ok:
        if result.result is not None:
            out.print(json.dumps(result.result, ensure_ascii=False), markup=False)
    elif result.error:
        if result.error.traceback:
            err.print(result.error.traceback.rstrip(), markup=False, highlight=False)
        killed = f" [dim](killed: {result.killed})[/dim]" if result.killed else ""
        err.print(f"[bold red]{result.error.type}:[/bold red] {result.error.message}{killed}")
    err.print(f"[dim]{result.duration_ms:.1f} ms ({engine})[/dim]", highlight=False)
