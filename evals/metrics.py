"""sacrebleu metrics, corpus-level and per item, each score with its signature.

Korean attaches particles and endings to words, so whitespace or 13a tokenisation makes
BLEU near zero for near-misses. For Korean targets BLEU uses `char` (or `ko-mecab` when
the spec asks and it is installed); chrF and chrF++ are character-based by design.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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


def _refs_by_position(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu wants one list per reference position; items may have fewer references."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]


def corpus_scores(
    names: Sequence[str], outputs: Sequence[str], references: Sequence[Sequence[str]], tokenize: str
) -> dict[str, dict[str, Any]]:
    result = {}
    refs = _refs_by_position(references)
    for name in names:
        metric = make(name, tokenize)
        score = metric.corpus_score(list(outputs), refs)
        result[name] = {
            "score": round(float(score.score), 4),
            "signature": str(metric.get_signature()),
        }
    return result


def sentence_scores(
    names: Sequence[str],
    output: str,
    references: Sequence[str],
    tokenize: str,
    cache: dict[str, Any],
) -> dict[str, float]:
    out = {}
    for name in names:
        if name not in cache:
            cache[name] = make(name, tokenize)
        out[name] = round(float(cache[name].sentence_score(output, list(references)).score), 4)
    return out
