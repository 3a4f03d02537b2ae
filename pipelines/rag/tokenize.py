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

_kiwi: Any = None
_kiwi_lock = threading.Lock()


def _load_kiwi() -> Any:
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            try:
                from kiwipiepy import Kiwi
            except ImportError:
                _kiwi = False
            else:
                _kiwi = Kiwi()
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
            if form not in _STOP:
                out.append(_plain(form))
    return out


def tokenize(text: str) -> list[str]:
    """Index tokens of one text."""
    return tokenize_many([text])[0]


def tokenize_many(texts: list[str]) -> list[list[str]]:
    """Index tokens of many texts (Kiwi tokenises them in one batch)."""
    kiwi = _load_kiwi()
    use_kiwi = kiwi is not False  # (a Kiwi object's truth value is costly to compute)
    results: list[list[str]] = [[] for _ in texts]
    korean = [i for i, t in enumerate(texts) if _HANGUL.search(t)]
    korean_set = set(korean)
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
        if run:
            out.append("~" + run.group(0)[:2])
    return out
