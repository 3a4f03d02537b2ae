"""sacrebleu metrics, corpus-level and per item, each score with its signature.

Korean attaches particles and endings to words, so whitespace or 13a tokenisation makes
BLEU near zero for near-misses. For Korean targets BLEU uses `char` (or `ko-mecab` when
the spec asks and it is installed); chrF and chrF++ are character-based by design.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF, TER

from pipelines.errors import UsageError

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def default_tokenizer(references: Sequence[Sequence[str]]) -> str:
    text = "".join(r for refs in references for r in refs)
    return "char" if _HANGUL.search(text) else "13a"


def make(name: str, tokenize: str) -> Any:
    if name == "chrf":
        return CHRF()
    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "bleu":
        try:
            return BLEU(tokenize=tokenize, effective_order=True)
        except (RuntimeError, KeyError, ImportError) as exc:
            hint = "pip install 'sacrebleu[ko]'" if tokenize == "ko-mecab" else "use char or 13a"
            raise UsageError(
                f"BLEU tokenizer {tokenize!r} is not available: {exc}", hint=hint
            ) from None
    if name == "ter":
        return TER(asian_support=True)
    raise UsageError(f"unknown metric {name!r}", hint="use chrf, chrf++, bleu or ter")


def lower_is_better(name: str) -> bool:
    return name == "ter"


class Scorer:
    """Each item's sufficient statistics are extracted once per metric (as sacrebleu's
    significance tests do); sentence scores, corpus scores and bootstrap resamples are all
    computed from them. Sentence scores equal `metric.sentence_score`, corpus scores equal
    `metric.corpus_score`."""

    def __init__(self, names: Sequence[str], tokenize: str) -> None:
        self.tokenize = tokenize
        self.metrics = {name: make(name, tokenize) for name in names}

    def item(self, output: str, references: Sequence[str]) -> dict[str, np.ndarray]:
        refs = [[r] for r in references]
        return {
            name: np.asarray(metric._extract_corpus_statistics([output], refs)[0], dtype=np.float64)
            for name, metric in self.metrics.items()
        }

    def score(self, name: str, stats: np.ndarray) -> float:
        return float(self.metrics[name]._compute_score_from_stats(list(stats)).score)

    def sentence(self, stats: dict[str, np.ndarray]) -> dict[str, float]:
        return {name: round(self.score(name, row), 4) for name, row in stats.items()}

    def corpus(self, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "score": round(self.score(name, np.sum([r[name] for r in rows], axis=0)), 4),
                "signature": str(metric.get_signature()),
            }
            for name, metric in self.metrics.items()
        }


def corpus_scores(
    names: Sequence[str], outputs: Sequence[str], references: Sequence[Sequence[str]], tokenize: str
) -> dict[str, dict[str, Any]]:
    scorer = Scorer(names, tokenize)
    return scorer.corpus([scorer.item(o, r) for o, r in zip(outputs, references, strict=True)])
