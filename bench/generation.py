"""Embedded generation speed: llama.cpp as llamapipe builds and loads it, against before.

Before (issue 10): `make install` built llama-cpp-python natively and loaded it with llama.cpp's
defaults. On Intel CPUs with AMX that build has AMX kernels and crashes in `llama_decode` on
any prompt of more than one token; and two processes on the same cores slowed each other
several times over (OpenMP's spinning waits). After: the Makefile builds without AMX, and
llamapipe loads llama.cpp with passive OpenMP waits (`pipelines/backends/llama_build.py`).

Rows, each measured in a child process (a crash ends the child, not the benchmark):
- after: the project's build, loaded as llamapipe loads it,
- before: the same build with llama.cpp's defaults (on a CPU without AMX the native build
  is this very build; on one with AMX, the native AMX build is measured too: it crashes),
- guard: after, with extra buffer types off: what llamapipe does to a build with AMX that
  was made elsewhere (it also turns off llama.cpp's CPU weight repacking),
for an English and a Korean prompt (Korean costs 2-3x the tokens): prefill and generation
tokens per second, back to back (median of 5) and two processes at once (the sum of both).
Ratios: after against before, same mode.

The AMX build is compiled once into bench/results/llama-amx-venv (about 5 minutes; never
through pip's cache, which must keep the project's build).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from pipelines.backends.gguf import default_gguf

PROBE = Path(__file__).with_name("_llama_probe.py")
EN = (
    "The hyangga are the oldest surviving Korean poems, written in the Silla kingdom with "
    "Chinese characters used for their sound and meaning. Scholars have argued about their "
    "readings for a century, and every edition explains its choices line by line. "
) * 4
KO = (
    "향가는 신라 시대에 한자의 소리와 뜻을 빌려 우리말을 적은 노래이다. 오늘날 전하는 작품은 "
    "많지 않지만, 학자들은 백 년 가까이 그 읽는 법을 두고 서로 다른 풀이를 내놓았다. "
) * 3
GENERATE = 64
REPEATS = 5
AFTER = "after: project build, as llamapipe loads it"
BEFORE = "before: same build, llama.cpp defaults"
LLAMAPIPE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # what pipelines.backends.llama_build sets


def cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def amx_build(results: Path) -> Path | None:
    """A venv with llama-cpp-python built as pip builds it by default (AMX kernels on)."""
    home = results / "llama-amx-venv"
    python = home / "bin" / "python"
    if python.exists():
        return python
    import llama_cpp

    print(f"building llama-cpp-python {llama_cpp.__version__} natively (about 5 minutes)...")
    venv.create(home, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 2)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir",
         f"llama-cpp-python=={llama_cpp.__version__}"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"could not build the AMX baseline: {done.stderr.strip()[-400:]}")
        return None
    return python


def probe(
    python: str, extra_bufts: bool | None, copies: int = 1, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run `copies` probes at once; their results, or how they died."""
    request = json.dumps(
        {
            "gguf": str(default_gguf()),
            "extra_bufts": extra_bufts,
            "env": env or {},
            "prompts": {"English": EN, "Korean": KO},
            "generate": GENERATE,
            "repeats": REPEATS,
        }
    )
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    children = [
        subprocess.Popen(
            [python, str(PROBE), request],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean,
        )
        for _ in range(copies)
    ]
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=900)
        if child.returncode != 0:
            how = f"signal {-child.returncode}" if child.returncode < 0 else child.returncode
            return {"crashed": f"exit {how}", "stderr": err.strip()[-300:]}
        outcomes.append(json.loads(out))
    first = outcomes[0]
    if copies > 1:  # throughput of the machine: the sum over the processes at once
        for name, row in first["results"].items():
            for key in ("prefill_tok_s", "generate_tok_s"):
                row[key] = round(sum(o["results"][name][key] for o in outcomes), 1)
    return first


MODES = ((1, "back to back"), (2, "2 at once"))


def main(out_dir: Path) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for copies, mode in MODES:
        rows[f"{AFTER} ({mode})"] = probe(sys.executable, None, copies, LLAMAPIPE_ENV)
        rows[f"{BEFORE} ({mode})"] = probe(sys.executable, None, copies)
        rows[f"guard: after, extra buffers off ({mode})"] = probe(
            sys.executable, False, copies, LLAMAPIPE_ENV
        )
    amx_python = amx_build(out_dir) if cpu_has_amx() else None
    if amx_python is not None:
        rows["before: native AMX build, defaults (back to back)"] = probe(str(amx_python), None)
        for copies, mode in MODES:
            rows[f"native AMX build + guard ({mode})"] = probe(
                str(amx_python), False, copies, LLAMAPIPE_ENV
            )
    doc = {
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "cpu_has_amx": cpu_has_amx(),
        },
        "generate_tokens": GENERATE,
        "rows": rows,
    }
    (out_dir / "generation.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "generation.md").write_text(table(rows))
    return doc


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "### Embedded generation (SmolLM2-135M Q4_1), tokens per second",
        "",
        "| build | prompt | tokens | prefill tok/s | generate tok/s | vs before, same mode |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        if "crashed" in row:
            lines.append(f"| {name} | all | | crashed ({row['crashed']}) | crashed | |")
            continue
        mode = name[name.rindex("(") :]
        baseline = rows.get(f"{BEFORE} {mode}")
        for prompt, r in row["results"].items():
            ratio = ""
            if baseline and "results" in baseline and baseline is not row:
                b = baseline["results"][prompt]
                ratio = (
                    f"prefill {r['prefill_tok_s'] / b['prefill_tok_s']:.2f}x, "
                    f"generate {r['generate_tok_s'] / b['generate_tok_s']:.2f}x"
                )
            lines.append(
                f"| {name} | {prompt} | {r['prompt_tokens']} | {r['prefill_tok_s']:.0f} "
                f"| {r['generate_tok_s']:.1f} | {ratio} |"
            )
    lines += [
        "",
        f"{GENERATE} tokens generated greedily per run; median of {REPEATS}; "
        "2 at once: the sum over both processes.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "generation.md").read_text())
