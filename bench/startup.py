"""Start-up: whole `llamapipe` processes, against a bare `python -c pass` in the same run.

Each case is a fresh process, timed from spawn to exit (wall) and by the CPU it used
(user + sys, less sensitive to other work on the machine): `--help`, `--version`, `models`
(it asks Ollama on loopback; with none there the connection is refused at once), a tab
completion (click's completion runs the same imports), and the RAG query tokeniser in a
fresh process: imported only, then on one English and one Korean question (the Korean one
builds the Kiwi analyser; English must not, so it costs what the import costs). The cases
take turns round by round, so load from elsewhere falls on all of them alike; the table
gives medians and the ratio to `python -c pass`.

LLAMAPIPE_BENCH_BASELINE=/path/to/another/tree (e.g. `git archive <commit> | tar -x -C DIR`)
times the same cases on that tree too, in the same rounds: before/after in one run.
LLAMAPIPE_BENCH_RUNS=N sets the rounds (default 11).

Floors (issue 23, this machine): `--help` and `--version` <= 0.3 s, `models` <= 1 s.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = 11
FLOORS_S = {"llamapipe --help": 0.3, "llamapipe --version": 0.3, "llamapipe models": 1.0}
ENGLISH = "Who published a reading of the hyangga in 1929?"
KOREAN = "처용가는 누가 지었나요?"
_TOKENIZE = "from pipelines.rag.tokenize import query_terms; query_terms({!r})"
COMPLETION = {"_LLAMAPIPE_COMPLETE": "complete_bash", "COMP_WORDS": "llamapipe ra",
              "COMP_CWORD": "1"}  # fmt: skip

# name -> (arguments after the interpreter, extra environment)
CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "python -c pass": (["-c", "pass"], {}),
    "llamapipe --help": (["-m", "cli", "--help"], {}),
    "llamapipe --version": (["-m", "cli", "--version"], {}),
    "llamapipe models": (["-m", "cli", "models"], {}),
    "tab completion (llamapipe ra<TAB>)": (["-m", "cli"], COMPLETION),
    "import the tokeniser, no text": (["-c", _TOKENIZE.split(";")[0]], {}),
    "tokenise an English question": (["-c", _TOKENIZE.format(ENGLISH)], {}),
    "tokenise a Korean question": (["-c", _TOKENIZE.format(KOREAN)], {}),
}


def _once(tree: Path, args: list[str], extra: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process on `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "100", **extra}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed on {tree}: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(trees: dict[str, Path], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for tree in trees.values():  # one warm-up each: bytecode compiled, files in the page cache
        for args, extra in CASES.values():
            _once(tree, args, extra)
    for _ in range(runs):
        for label, tree in trees.items():
            for name, (args, extra) in CASES.items():
                samples.setdefault((label, name), []).append(_once(tree, args, extra))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (label, name), got in samples.items():
        out.setdefault(label, {})[name] = {
            "wall_s": round(statistics.median(w for w, _ in got), 4),
            "cpu_s": round(statistics.median(c for _, c in got), 4),
            "runs": len(got),
        }
    return out


def slowest_imports(tree: Path, args: list[str], top: int = 8) -> list[dict[str, Any]]:
    """The top-level imports that cost most (`python -X importtime`), cumulative ms."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=tree, env=env, capture_output=True
    )
    rows = []
    for line in done.stderr.decode().splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if cumulative.strip().isdigit() and not name[1:].startswith(" "):  # top level only
            rows.append({"module": name.strip(), "ms": round(int(cumulative) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def main(out_dir: Path, runs: int | None = None) -> dict[str, Any]:
    runs = runs or int(os.environ.get("LLAMAPIPE_BENCH_RUNS") or RUNS)
    trees = {"now": ROOT}
    baseline = os.environ.get("LLAMAPIPE_BENCH_BASELINE", "")
    if baseline:
        trees["baseline"] = Path(baseline).resolve()
    timings = measure(trees, runs)
    now = timings["now"]
    floors = {f"{name} <= {limit:g} s": now[name]["wall_s"] <= limit
              for name, limit in FLOORS_S.items()}  # fmt: skip
    doc = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "trees": {label: str(tree) for label, tree in trees.items()},
        "median_of_runs": runs,
        "timings": timings,
        "floors": floors,
        "slowest_imports_of_help": slowest_imports(ROOT, ["-m", "cli", "--help"]),
    }
    (out_dir / "startup.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "startup.md").write_text(_markdown(doc))
    return doc


def _markdown(doc: dict[str, Any]) -> str:
    timings, runs = doc["timings"], doc["median_of_runs"]
    now, base = timings["now"], timings.get("baseline")
    bare = now["python -c pass"]["wall_s"]
    head = "| process | wall s | CPU s | vs `python -c pass` |"
    rule = "|---|---:|---:|---:|"
    if base:
        head += " baseline wall s | baseline vs `python -c pass` | speed-up |"
        rule += "---:|---:|---:|"
    lines = [
        "### Start-up: whole processes, medians of "
        f"{runs} rounds (load {doc['machine']['load_average_1m']}, "
        f"{doc['machine']['cpus']} CPUs)",
        "",
        head,
        rule,
    ]
    for name, t in now.items():
        row = f"| {name} | {t['wall_s']:.3f} | {t['cpu_s']:.3f} | {t['wall_s'] / bare:.1f}x |"
        if base:
            b = base[name]
            b_bare = base["python -c pass"]["wall_s"]
            row += (
                f" {b['wall_s']:.3f} | {b['wall_s'] / b_bare:.1f}x | "
                f"{b['wall_s'] / t['wall_s']:.1f}x |"
            )
        lines.append(row)
    met = ", ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in doc["floors"].items())
    imports = ", ".join(f"{r['module']} {r['ms']} ms" for r in doc["slowest_imports_of_help"])
    lines += ["", f"Floors: {met}.", "", f"Slowest top-level imports of `--help`: {imports}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "startup.md").read_text())
