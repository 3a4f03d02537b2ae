"""`llamapipe eval run`, `report`, `history` and `schedule`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from llamapipe_app.commands import common
from llamapipe_app.commands.common import ConcurrencyFlag, JsonFlag, err, out, print_json
from pipelines.errors import EXIT_FAILED, Interrupted, UsageError
from pipelines.inputs import writable_folder
from pipelines.settings import load_settings

app = typer.Typer(
    help="Score pipelines against references, track runs, schedule reports.", no_args_is_help=True
)

OutFlag = Annotated[
    Optional[Path], typer.Option("--out", help="Runs folder (default: <data_dir>/evals).")
]


LimitFlag = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N items.")]
SystemsBackendFlag = Annotated[
    Optional[str],
    typer.Option(
        "--backend", metavar="NAME", help="Every system that asks a model, on this backend."
    ),
]
SystemsModelFlag = Annotated[
    Optional[str],
    typer.Option("--model", help="Every system that asks a model, on this model (tag, GGUF, id)."),
]


def _out(out_dir: Path | None) -> Path:
    return out_dir or load_settings().data_dir / "evals"


@app.command("run")
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The eval spec (YAML).")],
    out_dir: OutFlag = None,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="Take the lock; exit 1 on a significant regression.")
    ] = False,
    concurrency: ConcurrencyFlag = None,
    limit: LimitFlag = None,
    backend: SystemsBackendFlag = None,
    model: SystemsModelFlag = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a spec (resuming an unfinished one), score it, write reports and history.

    --limit, --backend and --model change this run's systems (recorded in it)."""
    from evals.runner import run_spec
    from evals.schedule import run_lock
    from evals.spec import check_inputs, load_spec, with_overrides

    spec = with_overrides(load_spec(spec_path), backend=backend, model=model, limit=limit)
    check_inputs(spec)  # what it reads is there: before any folder is made or model loads
    settings = load_settings({"concurrency": concurrency})
    if concurrency is not None:  # the flag wins over the spec's own setting
        spec = spec.model_copy(
            update={
                "concurrency": concurrency,
                "systems": [s.model_copy(update={"concurrency": None}) for s in spec.systems],
            }
        )
    where = writable_folder(_out(out_dir), "runs folder")
    with common.toolkit(settings) as kit, _progress_bar(spec.name) as step:
        try:
            with run_lock(where) if scheduled else contextlib.nullcontext():
                summary = run_spec(
                    spec, where, settings=settings,
                    backend_factory=lambda s: common.load_model(kit, s), on_step=step,
                )  # fmt: skip
        except KeyboardInterrupt:
            raise _interrupted_run(where, spec, spec_path) from None
    run_dir = where / summary["run_id"]
    if as_json:
        print_json(summary)
    else:
        _print_report(run_dir / "report.md")
        err.print(
            f"report: {run_dir / 'report.html'}\nhistory: {where / 'index.html'}", highlight=False
        )
    if _print_regressions(summary) and scheduled:
        raise typer.Exit(EXIT_FAILED)


@contextlib.contextmanager
def _progress_bar(name: str) -> Iterator[Callable[[Any], None]]:
    """The shared progress bar (on stderr, only on a terminal), with elapsed time and ETA;
    yields what the runner calls at each step."""
    with common.progress_bar(name, None, unit="outputs", rate="outputs", note=True) as bar:

        def step(p: Any) -> None:
            bar.update(
                total=p.total,
                completed=p.done,
                note=f"{p.model_calls} calls, {p.cached} cached"
                + (f", {p.resumed} resumed" if p.resumed else "")
                + (f", {p.in_flight} in flight" if p.in_flight > 1 else ""),
            )

        yield step


def _print_regressions(summary: dict[str, Any]) -> bool:
    """Say what regressed since the previous run; whether anything did."""
    regressions = (summary.get("previous") or {}).get("regressions") or []
    for r in regressions:
        changed = r.get("changed") or []
        err.print(
            f"[bold red]regressed:[/bold red] {r['system']} {r['metric']} "
            f"{r['previous']:.2f} -> "
            f"{r['current']:.2f} (95% CI of the change {r['ci']})"
            + (f"; but it ran differently: {'; '.join(changed)}" if changed else ""),
            markup=True,
            highlight=False,
        )
    return bool(regressions)


def _print_report(path: Path) -> None:
    """The Markdown report: rendered (tables as tables) on a terminal, as Markdown otherwise,
    so `llamapipe eval report DIR > report.md` writes Markdown."""
    text = path.read_text(encoding="utf-8")
    if out.is_terminal:
        from rich.markdown import Markdown

        out.print(Markdown(text))
    else:
        out.print(text, markup=False, highlight=False)


def _interrupted_run(where: Path, spec: Any, spec_path: Path) -> Interrupted:
    """What an interrupted run kept: every finished output is on disk, and the run resumes."""
    from evals.runs import find_unfinished, read_results

    run_dir = find_unfinished(where, spec)
    kept = len(read_results(run_dir / "results.jsonl")) if run_dir else 0
    return Interrupted(
        f"{kept} finished outputs kept in {run_dir or where}",
        hint=f"run `llamapipe eval run {spec_path}` again to resume where it stopped",
    )


@app.command("report")
def report(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run id (as `eval run` printed it), `latest`, or a run folder; with "
            "--compare, the runs folder.",
        ),
    ] = "latest",
    compare: Annotated[
        Optional[tuple[str, str]],
        typer.Option("--compare", metavar="RUN_A RUN_B", help="Compare two runs in DIR."),
    ] = None,
    out_dir: OutFlag = None,
    export: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Write the run's items to a .csv or .jsonl file."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a run's report, export its items, or compare two runs of a spec.

    The report is rendered on a terminal and Markdown when piped."""
    from evals.runs import find_run

    if compare:
        where = _out(out_dir) if run_ref == "latest" else Path(run_ref)
        _print_comparison(_compare(where, *compare), compare, as_json)
        return
    run_dir = find_run(_out(out_dir), run_ref)
    if export is not None:
        from evals.export import export_items

        rows = export_items(run_dir, export)
        err.print(f"{rows} items of {run_dir.name} written to {export}", highlight=False)
        return
    if as_json:
        print_json(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))
    else:
        _print_report(run_dir / "report.md")


def _print_comparison(doc: dict[str, Any], runs: tuple[str, str], as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    table = Table(
        "system", "metric", runs[0], runs[1], "change", "95% CI", "significant",
        header_style="bold",
    )  # fmt: skip
    for system, per in doc["systems"].items():
        for metric, c in per.items():
            table.add_row(
                system,
                metric,
                f"{c['previous']:.2f}",
                f"{c['current']:.2f}",
                f"{c['diff']:+.2f}",
                f"[{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]",
                "yes" if c["significant"] else "no",
            )
    out.print(table)
    for system, notes in doc.get("changed", {}).items():
        out.print(f"{system} ran differently: {'; '.join(notes)}", markup=False)


def _compare(out_dir: Path, run_a: str, run_b: str) -> dict[str, Any]:
    from evals.history import compare_runs
    from evals.runs import read_results
    from evals.spec import EvalSpec

    dirs = [out_dir / run_a, out_dir / run_b]
    for d in dirs:
        if not (d / "summary.json").exists():
            raise UsageError(
                f"no finished run {d.name} in {out_dir}", hint="see `llamapipe eval history DIR`"
            )
    meta = json.loads((dirs[1] / "run.json").read_text(encoding="utf-8"))
    spec = EvalSpec.model_validate(meta["spec"])
    summary_b = json.loads((dirs[1] / "summary.json").read_text(encoding="utf-8"))
    return compare_runs(out_dir, run_a, summary_b, read_results(dirs[1] / "results.jsonl"), spec)


@app.command("history")
def history(
    out_dir: Annotated[
        Optional[Path], typer.Argument(metavar="DIR", help="The runs folder.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every recorded run, with a trend per system and metric; writes DIR/index.html."""
    from evals.history import load_history
    from evals.report import write_index

    where = _out(out_dir)
    if where.exists() and not where.is_dir():
        raise UsageError(
            f"{where} is a file, not a runs folder", hint="pass the --out folder of eval run"
        )
    if out_dir is not None and not where.exists():
        raise UsageError(f"no runs folder at {where}", hint="pass the --out folder of eval run")
    runs = load_history(where)
    if as_json:
        print_json(runs)
        return
    if not runs:
        out.print(f"no runs recorded in {where}")
        return
    for spec in sorted({r["spec"] for r in runs}):
        mine = [r for r in runs if r["spec"] == spec]
        table = Table(
            "system", "metric", "runs", "first", "last", "trend", "ran (last run)",
            title=spec, header_style="bold",
        )  # fmt: skip
        keys = sorted({(s, m) for r in mine for s, ms in r["systems"].items() for m in ms})
        for system, metric in keys:
            series = [
                r["systems"][system][metric] for r in mine if metric in r["systems"].get(system, {})
            ]
            table.add_row(
                system,
                metric,
                str(len(series)),
                f"{series[0]:.2f}",
                f"{series[-1]:.2f}",
                _spark(series),
                _ran_last(mine, system),
            )
        out.print(table)
    err.print(f"charts: {write_index(where)}")


def _ran_last(runs: list[dict[str, Any]], system: str) -> str:
    """What the system ran in the last run; `(changed)` when earlier runs ran another."""
    from evals.identity import label

    labels = [label((r.get("ran") or {}).get(system)) for r in runs if system in r["systems"]]
    return labels[-1] + (" (changed)" if len(set(labels)) > 1 else "")


def _spark(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    return "".join(bars[0 if hi == lo else round((v - lo) / (hi - lo) * 7)] for v in values[-30:])


@app.command("schedule")
def schedule(
    spec_path: Annotated[Optional[Path], typer.Argument(metavar="[SPEC]")] = None,
    cron: Annotated[
        Optional[str], typer.Option("--cron", help='When, in cron syntax, e.g. "0 3 * * *".')
    ] = None,
    out_dir: OutFlag = None,
    install: Annotated[
        bool, typer.Option("--install", help="Add the line to your crontab (or the timer).")
    ] = False,
    systemd: Annotated[
        bool, typer.Option("--systemd", help="A systemd user timer instead of a crontab line.")
    ] = False,
    backend: Annotated[
        Optional[str], typer.Option("--backend", metavar="NAME", help="Pin this backend.")
    ] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Pin this model.")] = None,
    env_file: Annotated[
        Optional[Path],
        typer.Option(
            "--env-file", help="Read at run time (API keys): NAME=value lines, chmod 600."
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="List the installed schedules and what each pins.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print (or --install) a crontab line or systemd user timer that runs SPEC.

    It runs what runs now: the backend and model chosen now, every setting,
    the folder and the interpreter, pinned (--show lists them)."""
    from evals.schedule import (
        check_cron,
        cron_line,
        install_cron,
        install_systemd,
        on_calendar,
        pin,
        systemd_dir,
        systemd_units,
        write_wrapper,
    )
    from evals.spec import check_inputs, load_spec

    if show:
        return _show_schedules(spec_path, as_json)
    if spec_path is None or cron is None:
        raise UsageError(
            "eval schedule needs a SPEC and --cron",
            hint='e.g. llamapipe eval schedule evals/specs/hyangga.yaml --cron "0 3 * * *"; '
            "--show lists what is installed",
        )
    spec = load_spec(spec_path)
    check_inputs(spec)  # a bad spec fails now, not at 3 a.m.
    on_calendar(cron) if systemd else check_cron(cron)  # and a bad schedule, before probing
    flags = {"backend": backend, "model": model}
    named = [s.backend for s in spec.systems if s.backend]  # their keys are needed too
    pinned = pin(common.settings_from_flags(flags), env_file, also=named)
    runs = writable_folder(_out(out_dir), "runs folder")  # made now: the log goes there
    err.print(f"backend: {pinned.env.get('LLAMAPIPE_BACKEND')} ({pinned.reason})", highlight=False)
    err.print(
        f"pinned: {len(pinned.env)} variables (every setting, the config file, PYTHONPATH); "
        f"runs in {pinned.cwd} with {pinned.python}"
        + (f", reading {pinned.env_file} first" if pinned.env_file else "")
        + "; `eval schedule --show` lists them once installed",
        highlight=False,
    )
    if systemd:
        units = systemd_units(cron, spec_path, runs, pinned)
        if install:
            for done in install_systemd(units, systemd_dir()):
                err.print(done, highlight=False)
        for file, text in units.items():
            out.print(f"# {file}\n{text}", markup=False, highlight=False)
        return
    script = write_wrapper(spec_path, runs, pinned)
    err.print(f"wrote {script} (what the line runs, in that environment)", highlight=False)
    line = cron_line(cron, spec_path, runs, pinned)
    if install:
        install_cron(line, spec_path)
        err.print("installed in your crontab (crontab -l to see it)")
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def _show_schedules(spec_path: Path | None, as_json: bool) -> None:
    """The installed schedules (of SPEC, when given) and what each pins."""
    from evals.schedule import installed

    found = installed()
    if spec_path is not None:
        found = [s for s in found if s["spec"] == str(spec_path.resolve())]
    if as_json:
        print_json({"schedules": found})
        return
    if not found:
        err.print("no llamapipe eval schedules installed (crontab -l, ~/.config/systemd/user)")
        return
    for s in found:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row(s["kind"], f"{s['when']}  {s['spec']}")
        table.add_row("runs in", s["cwd"] or "(not pinned)")
        table.add_row("runs", s["command"])
        if s["env_file"]:
            table.add_row("reads", f"{s['env_file']} (keys, at run time)")
        for i, (name, value) in enumerate(s["pinned"].items()):
            table.add_row("pinned" if i == 0 else "", f"{name}={value}")
        if not s["pinned"]:
            table.add_row("pinned", "nothing: `auto` decides again at run time; schedule it anew")
        out.print(table, highlight=False)
        out.print()
