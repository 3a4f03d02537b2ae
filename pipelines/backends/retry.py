"""A served model's passing failures, tried again: exponential backoff with full jitter.

A busy server answers 429 or 503, a restarting one resets the connection, a stream can be
cut off mid-way; each is worth another try after a pause that grows (0.5 s, 1 s, 2 s...,
each drawn at random below that bound, so many clients do not come back in step). Anything
else (a missing model, a bad request, a refused connection, a timeout that already waited
long) fails at once. A stream is retried only before its first chunk: after that the caller
has shown text that a retry would repeat.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
import ollama

T = TypeVar("T")
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is worth another try (raw client errors, before translation)."""
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUS
    return isinstance(
        exc,
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionResetError),
    )


@dataclass(frozen=True)
class Backoff:
    retries: int = 3  # tries after the first
    base: float = 0.5  # seconds: the first pause is below this
    cap: float = 8.0  # no pause is longer
    sleep: Callable[[float], None] = time.sleep

    def pauses(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield random.uniform(0, min(self.cap, self.base * 2**attempt))


def retrying(call: Callable[[], T], backoff: Backoff) -> T:
    """`call()`, tried again after transient failures; the last failure is raised."""
    pauses = backoff.pauses()
    while True:
        try:
            return call()
        except Exception as exc:
            pause = next(pauses, None)
            if pause is None or not is_transient(exc):
                raise
            backoff.sleep(pause)


def retrying_stream(start: Callable[[], Iterator[T]], backoff: Backoff) -> Iterator[T]:
    """The chunks of `start()`, started again after a transient failure before the first."""
    pauses = backoff.pauses()
    while True:
        begun = False
        try:
            for chunk in start():
                begun = True
                yield chunk
            return
        except Exception as exc:
            pause = next(pauses, None)
            if begun or pause is None or not is_transient(exc):
                raise
            backoff.sleep(pause)
