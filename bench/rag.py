"""RAG retrieval: ingest throughput, query latency, index size, against LangChain's
BM25Retriever (rank_bm25) on the same generated corpus and machine.

The corpus is generated (seeded): documents of English-like words with one in ten in
Korean, chunked by llamapipe; the baseline indexes exactly those chunk texts. Latency is
retrieval alone (no model): llamapipe's `IndexRetriever.hits` (BM25 with Korean-aware
tokens, relevance filter, chunk rows from SQLite) vs `BM25Retriever.invoke`.

Floors (issue 5): p95 <= 50 ms at 100k chunks, and at least 10x faster than the baseline.
LLAMAPIPE_BENCH_SIZES="10000,100000" picks the corpus sizes (in chunks).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench._common import percentiles
from pipelines.rag import Index, IndexRetriever

CHUNK_SIZE, OVERLAP = 400, 60
DOC_CHARS = 40_000
KOREAN_WORDS = [
    "향가",
    "신라",
    "노래",
    "처용",
    "서동",
    "무왕",
    "백제",
    "삼국유사",
    "균여전",
    "향찰",
    "해석",
    "학자",
    "시대",
    "왕",
    "승려",
    "달",
    "바람",
    "꽃",
    "마음",
    "부처",
    "길",
    "밤",
    "사람",
    "나라",
    "하늘",
    "물",
    "산",
    "절",
    "기도",
    "이야기",
    "기록",
]


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def make_corpus(folder: Path, chunks: int, rng: random.Random, words: list[str]) -> int:
    """Write documents until they hold about `chunks` chunks; returns bytes written."""
    weights = [1 / (i + 1) for i in range(len(words))]  # Zipf-like, as real text
    per_doc = DOC_CHARS // (CHUNK_SIZE - OVERLAP)
    total = 0
    for n in range(max(1, chunks // per_doc)):
        if n % 10 == 9:
            text = " ".join(rng.choice(KOREAN_WORDS) + rng.choice(["는", "를", "의", "에", "가"])
                            for _ in range(DOC_CHARS // 4))  # fmt: skip
        else:
            text = " ".join(rng.choices(words, weights, k=DOC_CHARS // 7))
        sentences = [s.strip().capitalize() + "." for s in text[:DOC_CHARS].split("  ") if s]
        body = "\n\n".join(" ".join(sentences)[i : i + 600] for i in range(0, DOC_CHARS, 600))
        path = folder / f"doc{n:05d}.txt"
        path.write_text(body, encoding="utf-8")
        total += path.stat().st_size
    return total


def queries(rng: random.Random, n: int, words: list[str]) -> list[str]:
    """Queries of the corpus's own words (its 5,000 most frequent), one in ten Korean."""
    words = words[:5000]
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(" ".join(rng.sample(KOREAN_WORDS, 2)) + "에 대해 알려줘")
        else:
            out.append(" ".join(rng.sample(words, rng.randint(2, 4))))
    return out


def run_size(chunks: int, work: Path) -> dict[str, Any]:
    rng = random.Random(chunks)
    corpus = work / f"corpus-{chunks}"
    corpus.mkdir()
    words = vocabulary(rng)
    size_bytes = make_corpus(corpus, chunks, rng, words)
    index = Index(work / f"index-{chunks}", chunk_size=CHUNK_SIZE, overlap=OVERLAP)
    started = time.perf_counter()
    report = index.ingest([corpus])
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    index.search("warm", 1)  # builds and caches the BM25 index once
    build_s = time.perf_counter() - started
    n_chunks = report.chunks_added
    retriever = IndexRetriever(index=index, k=5)
    qs = queries(rng, 300, words)
    for q in qs[:20]:
        retriever.hits(q)
    ours = []
    for q in qs:
        t = time.perf_counter()
        retriever.hits(q)
        ours.append((time.perf_counter() - t) * 1000)

    baseline = _baseline(index, qs[: 60 if chunks >= 100_000 else 200])
    disk = sum(f.stat().st_size for f in index.path.rglob("*") if f.is_file())
    ours_p = percentiles(ours, count="queries")
    return {
        "chunks": n_chunks,
        "corpus_mb": round(size_bytes / 1e6, 2),
        "ingest_s": round(ingest_s, 2),
        "ingest_mb_per_s": round(size_bytes / 1e6 / ingest_s, 2),
        "ingest_chunks_per_s": round(n_chunks / ingest_s),
        "bm25_build_s": round(build_s, 2),
        "index_mb_on_disk": round(disk / 1e6, 1),
        "llamapipe": ours_p,
        "baseline": baseline,
        "speedup_p50": round(baseline["p50_ms"] / ours_p["p50_ms"], 1),
        "speedup_p95": round(baseline["p95_ms"] / ours_p["p95_ms"], 1),
    }


def _baseline(index: Index, qs: list[str]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community's sunset note
        from langchain_community.retrievers import BM25Retriever
    with index._connect() as db:  # the same chunk texts llamapipe indexed
        texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY id")]
    started = time.perf_counter()
    retriever = BM25Retriever.from_texts(texts, k=5)
    build_s = time.perf_counter() - started
    samples = []
    for q in qs:
        t = time.perf_counter()
        retriever.invoke(q)
        samples.append((time.perf_counter() - t) * 1000)
    return {**percentiles(samples, count="queries"), "build_s": round(build_s, 2)}


def main(out_dir: Path) -> dict[str, Any]:
    sizes = [int(s) for s in os.environ.get("LLAMAPIPE_BENCH_SIZES", "10000,100000").split(",")]
    work = Path(tempfile.mkdtemp(prefix="llamapipe-bench-rag-"))
    try:
        rows = [run_size(n, work) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big = rows[-1]
    doc = {
        "sizes": rows,
        "floors": {
            "p95_ms<=50_at_largest": big["llamapipe"]["p95_ms"] <= 50,
            ">=10x_faster_than_rank_bm25": big["speedup_p95"] >= 10 and big["speedup_p50"] >= 10,
        },
    }
    (out_dir / "rag.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "### RAG retrieval vs LangChain BM25Retriever (rank_bm25)",
        "",
        "| chunks | ingest MB/s | chunks/s | index MB | llamapipe p50 / p95 ms | "
        "BM25Retriever p50 / p95 ms | speed-up p50 / p95 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chunks']:,} | {r['ingest_mb_per_s']} | {r['ingest_chunks_per_s']:,} | "
            f"{r['index_mb_on_disk']} | "
            f"{r['llamapipe']['p50_ms']:.2f} / {r['llamapipe']['p95_ms']:.2f} | "
            f"{r['baseline']['p50_ms']:.1f} / {r['baseline']['p95_ms']:.1f} | "
            f"{r['speedup_p50']}x / {r['speedup_p95']}x |"
        )
    ok = doc["floors"]
    lines += [
        "",
        f"Floors at {big['chunks']:,} chunks: p95 <= 50 ms "
        f"({'met' if ok['p95_ms<=50_at_largest'] else 'NOT met'}); >= 10x faster than the "
        f"baseline ({'met' if ok['>=10x_faster_than_rank_bm25'] else 'NOT met'}).",
        "",
    ]
    (out_dir / "rag.md").write_text("\n".join(lines))
    return doc


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    main(out)
    print((out / "rag.md").read_text())
