"""Sandbox latency and throughput, against a fresh `python -c` and in-process `exec`.

Per-run latency (p50/p95) of a trivial `solution()`:
- llamapipe warm: a walled worker is ready when the run starts (the normal case: the
  pool refills while the model writes the next program),
- llamapipe cold: the worker is spawned and walled inside the run,
- subprocess: a fresh `python -c` per run (isolation by process only, no walls),
- exec: in-process `exec` (no isolation at all, as LangChain's PALChain did).
Throughput: runs per second with 2 threads calling one Sandbox(workers=2).

Floors (issue 3): warm p50 <= 10 ms, warm at least 5x faster than a fresh subprocess.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import percentiles
from pipelines.sandbox import Limits, Sandbox

CODE = "def solution():\n    return 6 * 7\n"
RUNS = 200


def timed(fn: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None) -> list[float]:
    samples = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def check(value: Any) -> None:
    if value != 42:
        raise AssertionError(f"wrong result: {value!r}")


def warm(runs: int) -> list[float]:
    with Sandbox(Limits(), workers=2) as sb:
        return timed(lambda: check(sb.run(CODE).result), runs, before=sb.warm)


def cold(runs: int) -> list[float]:
    with Sandbox(Limits(), workers=0) as sb:
        sb.run(CODE)  # use up the worker start() made; every later run spawns its own
        return timed(lambda: check(sb.run(CODE).result), runs)


def fresh_subprocess(runs: int) -> list[float]:
    program = CODE + "import json; print(json.dumps(solution()))"

    def once() -> None:
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, check=True)
        check(json.loads(out.stdout))

    return timed(once, runs)


def in_process_exec(runs: int) -> list[float]:
    def once() -> None:
        namespace: dict[str, Any] = {}
        exec(CODE, namespace)  # the unsafe baseline, trusted code only
        check(namespace["solution"]())

    return timed(once, runs)


def throughput(run_one: Callable[[], None], seconds: float = 5.0, threads: int = 2) -> float:
    done = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def work() -> None:
        while time.perf_counter() < stop:
            run_one()
            with lock:
                done[0] += 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return round(done[0] / (time.perf_counter() - start), 1)


def main(out_dir: Path, runs: int = RUNS) -> dict[str, Any]:
    rows = {
        "llamapipe warm": percentiles(warm(runs)),
        "llamapipe cold": percentiles(cold(max(runs // 4, 20))),
        "python -c subprocess": percentiles(fresh_subprocess(max(runs // 2, 20))),
        "in-process exec (no isolation)": percentiles(in_process_exec(runs)),
    }
    with Sandbox(Limits(), workers=2) as sb:
        sandbox_rps = throughput(lambda: check(sb.run(CODE).result))

    def one_subprocess() -> None:
        subprocess.run([sys.executable, "-c", CODE], capture_output=True, check=True)

    subprocess_rps = throughput(one_subprocess)
    warm_p50 = rows["llamapipe warm"]["p50_ms"]
    speedup = rows["python -c subprocess"]["p50_ms"] / warm_p50
    doc = {
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "kernel": platform.release(),
        },
        "latency": rows,
        "throughput_runs_per_s": {
            "llamapipe (2 workers, 2 threads)": sandbox_rps,
            "python -c subprocess (2 threads)": subprocess_rps,
        },
        "warm_vs_subprocess_speedup": round(speedup, 1),
        "floors": {
            "warm_p50_ms<=10": warm_p50 <= 10,
            "warm>=5x_faster_than_subprocess": speedup >= 5,
        },
    }
    (out_dir / "sandbox.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "### Sandbox: per-run latency of a trivial `solution()`",
        "",
        "| runner | p50 ms | p95 ms | p50 vs llamapipe warm |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        ratio = row["p50_ms"] / warm_p50
        lines.append(f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {ratio:.2f}x |")
    lines += [
        "",
        f"Throughput, 2 threads: llamapipe {sandbox_rps} runs/s, "
        f"fresh subprocess {subprocess_rps} runs/s.",
        f"Floors: warm p50 {warm_p50:.2f} ms (<= 10: {'met' if warm_p50 <= 10 else 'NOT met'}); "
        f"warm is {speedup:.1f}x faster than a fresh subprocess "
        f"(>= 5x: {'met' if speedup >= 5 else 'NOT met'}).",
        "",
    ]
    (out_dir / "sandbox.md").write_text("\n".join(lines))
    return doc


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "sandbox.md").read_text())
