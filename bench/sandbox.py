"""Sandbox latency and throughput, against a fresh `python -c` and in-process `exec`.

Per-run latency (p50/p95) of a trivial `solution()`:
- fork server, back to back: runs with no pause between them (PAL self-consistency, `pal
  run`): each waits for the zygote to fork and wall in a replacement,
- fork server, warm: a walled child is ready when the run starts (the pool refilled while
  the model wrote the next program),
- per-run worker, back to back: the engine before the fork server (and its fallback): a
  fresh interpreter importing the allowed modules, then the walls, per run,
- subprocess: a fresh `python -c` per run (isolation by process only, no walls),
- exec: in-process `exec` (no isolation at all, as LangChain's PALChain did).
First run after `Sandbox()`: starting the zygote and the first child, per fresh Sandbox.
Throughput: runs per second with 2 threads, back to back, each engine and `python -c`.
Ceilings: the CPU time of a fork loop in an interpreter holding the allowed modules, whose
child runs the program and exits, bare and with the walls (no host): how fast any Python fork
server could go on this machine, as runs/s if every core did only that.

Floors (issue 13, this machine): back-to-back p50 <= 5 ms; throughput with 2 threads >= 5x
a fresh `python -c` subprocess's; first run after `Sandbox()` <= 150 ms.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def back_to_back(runs: int, fork_server: bool = True, cgroups: bool = True) -> list[float]:
    with _memory_wall(cgroups), Sandbox(Limits(), workers=2, fork_server=fork_server) as sb:
        assert sb.engine.startswith("fork server") == fork_server, sb.engine
        return timed(lambda: check(sb.run(CODE).result), runs)


@contextlib.contextmanager
def _memory_wall(cgroups: bool) -> Iterator[None]:
    """cgroups=False: as for a caller who may make none (RLIMIT_AS and the refused calls)."""
    from pipelines.sandbox import sandbox as module

    real = module.find_layout
    if not cgroups:
        module.find_layout = lambda: (None, "switched off for the bench")  # type: ignore
    try:
        yield
    finally:
        module.find_layout = real


def first_run(trials: int) -> list[float]:
    """A fresh Sandbox each time: start the engine, make the first child, run once."""
    samples = []
    for _ in range(trials):
        start = time.perf_counter()
        with Sandbox(Limits(), workers=2) as sb:
            check(sb.run(CODE).result)
            samples.append((time.perf_counter() - start) * 1000)
    return samples


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


# A fork loop with no host: the interpreter imports the allowed modules, then forks a child
# per run that runs the program and exits. With "walls", it first moves into the private root
# and the shared namespaces, and each child enters the walls a fork server's child enters (the
# same _root and _walls code: its own user, mount and IPC namespaces, a scratch tmpfs, no
# capabilities, Landlock, seccomp), all but the per-run pid namespace.
FORK_LOOP = """
import json, os, sys
sys.path.insert(0, sys.argv[4])
import _root, _walls
for name in sys.argv[1].split(","):
    __import__(name)
code, runs, walls = sys.argv[2], int(sys.argv[3]), sys.argv[5] == "walls"
if walls:
    view = json.loads(sys.argv[6])
    proc = _root.enter_private_root(view["readable"], view["hidden"])
    _walls.drop_root()
    _walls.enter_namespaces(_walls.SHARED_NAMESPACES, proc)
    rules = _walls.LandlockRules(["/"])
    seccomp = _walls.seccomp_filter()
before = os.times()
for _ in range(runs):
    pid = os.fork()
    if pid == 0:
        if walls:
            _walls.enter_namespaces(_walls.RUN_NAMESPACES, proc)
            os.close(proc)
            over = _root.keep_over_scratch()
            _walls.mount_scratch("/tmp", 16 << 20)
            _root.attach_over_scratch(over)
            _walls.drop_capabilities()
            rules.restrict(["/tmp", "/dev/null"])
            rules.close()
            _walls.install_seccomp(seccomp)
        namespace = {"__name__": "__main__"}
        exec(compile(code, "<program>", "exec"), namespace)
        namespace["solution"]()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
after = os.times()
print((sum(after[:4]) - sum(before[:4])) / runs * 1000)
"""


def fork_loop_cpu_ms(walls: bool, runs: int = 2000) -> float:
    """CPU ms per run (parent and child together) of the fork loop above."""
    import pipelines.sandbox
    from pipelines.sandbox.runtime import hidden_paths, readable_paths

    modules = ",".join(Limits().allowed_modules)
    here = str(Path(pipelines.sandbox.__file__).parent)
    view = json.dumps({"readable": readable_paths(), "hidden": hidden_paths()})
    argv = [modules, CODE, str(runs), here, "walls" if walls else "bare", view]
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", FORK_LOOP, *argv],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout)


# The private root, built ourselves (as the zygote does, after importing the allowed modules)
# or by bubblewrap wrapping the interpreter: the same view, timed as whole processes.
PRELOAD = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
for name in sys.argv[1].split(","):
    __import__(name)
if len(sys.argv) > 3:
    import _root
    view = json.loads(sys.argv[3])
    start = time.perf_counter()
    _root.enter_private_root(view["readable"], view["hidden"])
    print((time.perf_counter() - start) * 1000)
"""


def private_root_costs(trials: int = 20) -> dict[str, Any]:
    """Whole-process ms (p50) of: an interpreter importing the allowed modules; the same that
    then builds the private root itself; the same started inside bubblewrap's root of the
    same view (Debian's `bubblewrap`, if installed). The root's cost is the difference."""
    import os
    import shutil

    import pipelines.sandbox
    from pipelines.sandbox.runtime import hidden_paths, readable_paths

    modules = ",".join(Limits().allowed_modules)
    here = str(Path(pipelines.sandbox.__file__).parent)
    readable, hidden = readable_paths(), hidden_paths()
    view = json.dumps({"readable": readable, "hidden": hidden})
    python = os.path.realpath(sys._base_executable)  # type: ignore[attr-defined]
    base = [python, "-I", "-S", "-c", PRELOAD, modules, here]

    def wall(argv: list[str]) -> float:
        return percentiles(timed(lambda: subprocess.run(argv, check=True, capture_output=True),
                                 trials))["p50_ms"]  # fmt: skip

    inside = [
        float(subprocess.run([*base, view], check=True, capture_output=True, text=True).stdout)
        for _ in range(trials)
    ]
    out: dict[str, Any] = {
        "interpreter and allowed modules": wall(base),
        "... then the private root, built here": wall([*base, view]),
        "private root alone (timed inside)": percentiles(inside)["p50_ms"],
    }
    bwrap = shutil.which("bwrap")
    if bwrap:
        # bubblewrap starts the interpreter inside the root, so it cannot know which shared
        # libraries the interpreter will load: it binds all of them.
        binds = ["--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent"]
        needs = ["/usr/lib", "/usr/lib64", "/lib", "/lib64", os.path.dirname(python),
                 f"{sys.base_prefix}/lib", here]  # fmt: skip
        for path in dict.fromkeys([*readable, *needs]):
            if os.path.islink(path):
                binds += ["--symlink", os.readlink(path), path]
            elif path.startswith("/dev/"):
                binds += ["--dev-bind", path, path]
            elif os.path.exists(path):
                binds += ["--ro-bind", path, path]
        for path in hidden:
            binds += ["--tmpfs", path]
        binds += ["--tmpfs", "/tmp", "--chdir", "/tmp"]
        out["... inside bubblewrap's root of the same view"] = wall([bwrap, *binds, "--", *base])
    return out


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
    rows = _latencies(runs)
    cold = percentiles(first_run(20))
    roots = private_root_costs()
    rates = _throughputs()
    bare_ms, walled_ms = fork_loop_cpu_ms(walls=False), fork_loop_cpu_ms(walls=True)
    rates["ceiling: bare fork, no walls (all cores)"] = round(_cpus() * 1000 / bare_ms, 1)
    rates["ceiling: fork with the walls, no host (all cores)"] = round(
        _cpus() * 1000 / walled_ms, 1
    )
    p50 = rows["fork server, back to back"]["p50_ms"]
    ratio = rates["llamapipe fork server (2 threads)"] / rates["python -c subprocess (2 threads)"]
    of_ceiling = (
        rates["llamapipe fork server (2 threads)"]
        / rates["ceiling: fork with the walls, no host (all cores)"]
    )
    floors = {
        "back_to_back_p50_ms<=5": p50 <= 5,
        "throughput>=5x_subprocess": ratio >= 5,
        "first_run_p50_ms<=150": cold["p50_ms"] <= 150,
    }
    doc = {
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "kernel": platform.release(),
        },
        "latency": rows,
        "first_run_after_Sandbox()": cold,
        "throughput_runs_per_s": rates,
        "throughput_vs_subprocess": round(ratio, 2),
        "throughput_vs_walled_ceiling": round(of_ceiling, 2),
        "fork_loop_cpu_ms_per_run": {"bare": round(bare_ms, 3), "walls": round(walled_ms, 3)},
        "floors": floors,
        "private_root_p50_ms": roots,
    }
    (out_dir / "sandbox.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "sandbox.md").write_text(_markdown(doc))
    return doc


def _latencies(runs: int) -> dict[str, dict[str, Any]]:
    return {
        "fork server, back to back": percentiles(back_to_back(runs)),
        "fork server, back to back, no memory cgroup": percentiles(
            back_to_back(runs, cgroups=False)
        ),
        "fork server, warm": percentiles(warm(runs)),
        "per-run worker, back to back": percentiles(back_to_back(runs // 4, fork_server=False)),
        "python -c subprocess": percentiles(fresh_subprocess(max(runs // 2, 20))),
        "in-process exec (no isolation)": percentiles(in_process_exec(runs)),
    }


def _throughputs() -> dict[str, float]:
    rates = {}
    engines = (("fork server", True, True), ("fork server, no memory cgroup", True, False),
               ("per-run worker", False, True))  # fmt: skip
    for name, fork_server, cgroups in engines:
        with _memory_wall(cgroups), Sandbox(Limits(), workers=2, fork_server=fork_server) as sb:
            rates[f"llamapipe {name} (2 threads)"] = throughput(
                lambda sb=sb: check(sb.run(CODE).result)  # type: ignore[misc]
            )

    def one_subprocess() -> None:
        subprocess.run([sys.executable, "-c", CODE], capture_output=True, check=True)

    rates["python -c subprocess (2 threads)"] = throughput(one_subprocess)
    return rates


def _markdown(doc: dict[str, Any]) -> str:
    rows, rates, cold = (
        doc["latency"],
        doc["throughput_runs_per_s"],
        doc["first_run_after_Sandbox()"],
    )
    p50 = rows["fork server, back to back"]["p50_ms"]
    ratio, of_ceiling = doc["throughput_vs_subprocess"], doc["throughput_vs_walled_ceiling"]
    bare_ms, walled_ms = doc["fork_loop_cpu_ms_per_run"].values()
    lines = [
        "### Sandbox: per-run latency of a trivial `solution()`",
        "",
        "| runner | p50 ms | p95 ms | p50 vs fork server back to back |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p50_ms'] / p50:.2f}x |"
        )
    lines += [
        "",
        "| throughput, 2 threads back to back | runs/s | vs `python -c` |",
        "|---|---:|---:|",
    ]
    base = rates["python -c subprocess (2 threads)"]
    lines += [f"| {name} | {rps} | {rps / base:.2f}x |" for name, rps in rates.items()]
    met = {True: "met", False: "NOT met"}
    lines += [
        "",
        f"First run after `Sandbox()`: p50 {cold['p50_ms']:.1f} ms, p95 {cold['p95_ms']:.1f} ms.",
        f"Floors: back-to-back p50 {p50:.2f} ms (<= 5: {met[p50 <= 5]}); throughput "
        f"{ratio:.2f}x `python -c` (>= 5x: {met[ratio >= 5]}), {of_ceiling:.2f}x the walled "
        f"fork ceiling; first run "
        f"{cold['p50_ms']:.1f} ms (<= 150: {met[cold['p50_ms'] <= 150]}).",
        f"Per run, 5x `python -c` leaves {_cpus() * 1000 / (5 * base):.2f} ms of CPU for "
        f"everything; a fork of the interpreter with the allowed modules that runs the program "
        f"and exits costs {bare_ms:.2f} ms bare and {walled_ms:.2f} ms with the walls (but the "
        f"pid namespace), before any host.",
        "",
    ]
    roots = doc["private_root_p50_ms"]
    plain = roots["interpreter and allowed modules"]
    lines += [
        "| private root, once per zygote (whole process) | p50 ms | vs no root |",
        "|---|---:|---:|",
        *(f"| {name} | {ms:.2f} | {ms / plain:.2f}x |" for name, ms in roots.items()),
        "",
    ]
    return "\n".join(lines)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "sandbox.md").read_text())
