"""Split text into overlapping chunks at natural boundaries, keeping character offsets.

A chunk ends, by preference, at a paragraph break, then a sentence end, then a space,
never mid-word when it can help it. Offsets are into the document's text, so
`text[start:end]` is the chunk, always.
"""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?。？！])[\"')\]]*\s+|(?<=다\.)\s*|\n")
_SPACE = re.compile(r"\s+")


def chunk_spans(text: str, size: int = 800, overlap: int = 120) -> list[tuple[int, int]]:
    """(start, end) spans covering `text`, each at most `size` chars, consecutive ones
    overlapping by up to `overlap` chars; whitespace-only spans are left out."""
    if size < 50 or not 0 <= overlap < size // 2:
        raise ValueError("chunk size must be >= 50 and overlap below half of it")
    spans: list[tuple[int, int]] = []
    start = _skip_space(text, 0)
    while start < len(text):
        hard_end = min(start + size, len(text))
        end = hard_end if hard_end == len(text) else _best_break(text, start, hard_end, size)
        stripped_end = end
        while stripped_end > start and text[stripped_end - 1].isspace():
            stripped_end -= 1
        if stripped_end > start:
            spans.append((start, stripped_end))
        if end >= len(text):
            break
        next_start = max(end - overlap, start + 1)
        if overlap:
            # begin the overlap at a word (or sentence) start, not mid-word
            space = text.find(" ", next_start, end)
            next_start = space + 1 if space != -1 else next_start
        start = _skip_space(text, next_start)
    return spans


def _best_break(text: str, start: int, hard_end: int, size: int) -> int:
    floor = start + size // 2  # never make a chunk smaller than half the size for a break
    window = text[floor:hard_end]
    for pattern in (_PARAGRAPH, _SENTENCE, _SPACE):
        last = None
        for match in pattern.finditer(window):
            last = match
        if last is not None:
            return floor + last.end()
    return hard_end


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentences of text[start:end] as absolute spans (for precise citation quotes)."""
    end = len(text) if end is None else end
    spans = []
    cursor = start
    for match in _SENTENCE.finditer(text, start, end):
        if match.start() > cursor:
            spans.append(_trim(text, cursor, match.start()))
        cursor = match.end()
    if cursor < end:
        spans.append(_trim(text, cursor, end))
    return [s for s in spans if s[1] > s[0]]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
