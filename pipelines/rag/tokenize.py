"""Tokens for BM25 that work for Korean: morphemes, not whitespace words.

Korean attaches particles and endings to words ("향가는", "향가를", "향가의" are one word
three ways), so whitespace tokenisers miss most matches. With kiwipiepy we index content
morphemes (nouns, verb and adjective stems, roots, foreign words, numbers) and drop
particles, endings and punctuation, plus each Korean word's first two syllables (a
guard against ambiguous analyses); other scripts are lower-cased words. Without
kiwipiepy, Hangul runs become character bigrams, which still match across endings.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_WORD = re.compile(r"\w+", re.UNICODE)
_HANGUL_RUN = re.compile(r"[\uac00-\ud7a3]+")
# Kiwi part-of-speech tags worth indexing: nouns, verb/adjective stems, roots, adverbs,
# foreign words, Chinese characters, numbers.
_KEEP_TAGS = ("NN", "NR", "NP", "VV", "VA", "XR", "MAG", "SL", "SH", "SN")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "which",
        "who",
        "why",
        "how",
        "with",
        "do",
        "does",
        "did",
    ]
)

# Question words: in nearly every question, in almost no answer. Counting them against a
# passage ("누가 지었나요?") would make the relevance floor reject the passage that answers.
_QUESTION = frozenset(
    ["누구", "무엇", "뭐", "언제", "어디", "왜", "어떻", "얼마"]
    + ["~" + w for w in ("누가", "누구", "무엇", "뭐", "뭔", "언제", "어디", "어떻", "어떤",
                         "어느", "얼마", "무슨", "몇")]
)  # fmt: skip
_STEM_TAGS = ("VV", "VA")  # verb and adjective stems: where Kiwi's readings disagree
_ALTERNATIVE_MARGIN = 3.0  # log-probability below the best reading still worth a look

_kiwi: Any = None  # built once per process, on the first Korean text; False: no kiwipiepy
_kiwi_lock = threading.Lock()


def _load_kiwi() -> Any:
    """The one Kiwi analyser. Building it and its first analysis load ~100 MB of models
    (~1.5-3 s on 2 cores), so text without Hangul never asks for it."""
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            try:
                from kiwipiepy import Kiwi
            except ImportError:
                _kiwi = False
            else:
                _kiwi = Kiwi()
                _kiwi.tokenize("")  # finish its lazy loading here, under the lock
    return _kiwi


def has_kiwi() -> bool:
    return _load_kiwi() is not False


def _plain(word: str) -> str:
    """A light English plural fold ("readings" -> "reading"), the same at index and query."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss") and word.isascii():
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return [_plain(w) for w in _WORD.findall(text.casefold()) if w not in _STOP]


def _bigrams(text: str) -> list[str]:
    out: list[str] = []
    for word in _words(text):
        if not _HANGUL_RUN.fullmatch(word):
            out.append(word)
            continue
        out += [word] if len(word) < 2 else [word[i : i + 2] for i in range(len(word) - 1)]
    return out


def _from_kiwi(tokens: Iterable[Any]) -> list[str]:
    out = []
    for token in tokens:
        if token.tag.startswith(_KEEP_TAGS):
            form = token.form.casefold()
            if form not in _STOP and form not in _QUESTION:
                out.append(_plain(form))
    return out


def query_terms(text: str) -> list[frozenset[str]]:
    """The query's terms for the relevance floor, each a set of equally good spellings.

    Kiwi's best reading of a verb can differ between a question and the passage that
    answers it ("지었나요" read as 지다, "지은" as 짓다). Stems from its next readings (within
    a small margin) join the best one's term, so either spelling matches it.
    """
    tokens = tokenize(text)
    kiwi: Any = _load_kiwi() if _HANGUL.search(text) else False
    if kiwi is False:
        return [frozenset([t]) for t in dict.fromkeys(tokens)]
    readings = kiwi.analyze(text, top_n=3)
    best = readings[0][1]
    alternatives: dict[int, set[str]] = {}  # by where the stem starts in the text
    for reading, score in readings:
        if score < best - _ALTERNATIVE_MARGIN:
            break
        for token in reading:
            if token.tag.startswith(_STEM_TAGS):
                alternatives.setdefault(token.start, set()).add(token.form.casefold())
    groups: list[frozenset[str]] = []
    seen: set[str] = set()
    for term in tokens:
        if term in seen:
            continue
        group = next((forms for forms in alternatives.values() if term in forms), {term})
        seen |= group
        groups.append(frozenset(group))
    return groups


def tokenize(text: str) -> list[str]:
    """Index tokens of one text."""
    return tokenize_many([text])[0]


def tokenize_many(texts: list[str]) -> list[list[str]]:
    """Index tokens of many texts (Kiwi tokenises them in one batch)."""
    results: list[list[str]] = [[] for _ in texts]
    korean = [i for i, t in enumerate(texts) if _HANGUL.search(t)]
    korean_set = set(korean)
    kiwi: Any = _load_kiwi() if korean else False  # building Kiwi takes seconds: only for Hangul
    use_kiwi = kiwi is not False  # (a Kiwi object's truth value is costly to compute)
    for i, text in enumerate(texts):
        if i not in korean_set:
            results[i] = _words(text)
        elif not use_kiwi:
            results[i] = _bigrams(text)
    if use_kiwi and korean:
        batch = kiwi.tokenize([texts[i] for i in korean])
        for i, tokens in zip(korean, batch, strict=True):
            results[i] = _from_kiwi(tokens) + _stems(texts[i])
    return results


def _stems(text: str) -> list[str]:
    """The first two syllables of each Korean word, as a second opinion beside Kiwi:
    its analysis of an ambiguous verb can differ between a question and a document
    ("지었나요" as 지다, "지었다고" as 짓다); "지었" is the same in both."""
    out = []
    for word in text.split():
        run = _HANGUL_RUN.search(word)
        if run and "~" + run.group(0)[:2] not in _QUESTION:
            out.append("~" + run.group(0)[:2])
    return out
