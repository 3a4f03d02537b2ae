"""The eval harness on 1,000 items with a precomputed-outputs system.

Measures: a first run (load, score sentence- and corpus-level with chrF, chrF++, BLEU and
TER, bootstrap 1,000 resamples, write results, summary, Markdown and HTML reports,
history), a re-run of the unchanged spec, and raw sacrebleu computing the same scores
(sentence and corpus level, same tokenizer) on the same data.

Floors (issue 6): each run <= 5 s on this machine, the first run <= 2x raw sacrebleu.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER

from evals.runner import run_spec
from evals.spec import load_spec
from pipelines.settings import load_settings

N = 1000
WORDS = [
    "서라벌",
    "밝은",
    "달",
    "밤",
    "노래",
    "마음",
    "꽃",
    "바람",
    "부처",
    "길",
    "사람",
    "나라",
    "하늘",
    "물",
    "산",
    "절",
    "기도",
    "이야기",
    "처용",
    "서동",
    "공주",
    "낭",
    "잎",
    "가지",
    "구름",
    "별",
    "봄",
    "가을",
]
ENDINGS = ("에", "을", "는", "이", "의", "로", "에서", "구나", "다", "어라")


def sentence(rng: random.Random) -> str:
    return (
        " ".join(rng.choice(WORDS) + rng.choice(ENDINGS) for _ in range(rng.randint(8, 16))) + "."
    )


def corrupt(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 4)):
        words[rng.randrange(len(words))] = rng.choice(WORDS) + rng.choice(ENDINGS)
    return " ".join(words)


def raw_sacrebleu(outputs: list[str], refs: list[str]) -> float:
    started = time.perf_counter()
    metrics = [
        CHRF(),
        CHRF(word_order=2),
        BLEU(tokenize="char", effective_order=True),
        TER(asian_support=True),
    ]
    for m in metrics:
        m.corpus_score(outputs, [refs])
        for o, r in zip(outputs, refs, strict=True):
            m.sentence_score(o, [r])
    return time.perf_counter() - started


def main(out_dir: Path) -> dict[str, Any]:
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="llamapipe-bench-evals-"))
    try:
        refs = [sentence(rng) for _ in range(N)]
        outs = [corrupt(r, rng) for r in refs]
        with (work / "data.jsonl").open("w", encoding="utf-8") as f:
            for i, r in enumerate(refs):
                row = {
                    "id": f"i{i}",
                    "source": f"src {i}",
                    "references": [r],
                    "meta": {"group": f"g{i // 5}"},
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with (work / "outputs.jsonl").open("w", encoding="utf-8") as f:
            for i, o in enumerate(outs):
                f.write(json.dumps({"id": f"i{i}", "output": o}, ensure_ascii=False) + "\n")
        (work / "spec.yaml").write_text(
            "name: bench\ntask: translate\ndataset: data.jsonl\n"
            "systems: [{name: precomputed, outputs: outputs.jsonl}]\n"
            "metrics: [chrf, chrf++, bleu, ter]\ntokenize: char\n"
        )
        spec = load_spec(work / "spec.yaml")
        settings = load_settings({"cache_dir": str(work / "cache")})
        timings = {}
        for label in ("first run", "re-run (unchanged spec)"):
            started = time.perf_counter()
            run_spec(spec, work / "runs", settings=settings, backend_factory=lambda s: None)
            timings[label] = round(time.perf_counter() - started, 3)
        raw = round(raw_sacrebleu(outs, refs), 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = round(timings["first run"] / raw, 2)
    doc = {
        "items": N,
        "seconds": timings,
        "raw_sacrebleu_s": raw,
        "harness_over_raw": ratio,
        "floors": {
            "each_run<=5s": all(v <= 5 for v in timings.values()),
            "harness<=2x_raw": ratio <= 2,
        },
    }
    (out_dir / "evals.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"### Eval harness: {N} items, precomputed outputs, chrF/chrF++/BLEU/TER, "
        "1,000-resample bootstrap",
        "",
        "| what | seconds | vs raw sacrebleu |",
        "|---|---:|---:|",
        *(f"| {k} | {v:.2f} | {v / raw:.2f}x |" for k, v in timings.items()),
        f"| raw sacrebleu (same scores, no bootstrap, no reports) | {raw:.2f} | 1.00x |",
        "",
        f"Floors: each run <= 5 s ({'met' if doc['floors']['each_run<=5s'] else 'NOT met'}); "
        f"first run <= 2x raw sacrebleu ({'met' if ratio <= 2 else 'NOT met'}: {ratio}x).",
        "",
    ]
    (out_dir / "evals.md").write_text("\n".join(lines))
    return doc


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "evals.md").read_text())
