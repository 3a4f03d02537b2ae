"""Backoff for a served model's passing failures (pipelines/backends/retry.py), no sockets."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import pytest

from pipelines.backends.retry import Backoff, is_transient, retrying, retrying_stream


def backoff(slept: list[float], retries: int = 3) -> Backoff:
    return Backoff(retries=retries, base=0.5, cap=8.0, sleep=slept.append)


@pytest.mark.parametrize(
    "exc, transient",
    [
        (ollama.ResponseError("busy", 503), True),
        (ollama.ResponseError("slow down", 429), True),
        (ollama.ResponseError("missing", 404), False),
        (ollama.ResponseError("bad", 400), False),
        (httpx.RemoteProtocolError("cut"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.ReadTimeout("slow"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_is_worth_another_try(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_pauses_grow_with_jitter_under_their_bound() -> None:
    slept: list[float] = []
    failures = iter([ollama.ResponseError("busy", 503)] * 3)

    def call() -> str:
        exc = next(failures, None)
        if exc:
            raise exc
        return "answer"

    assert retrying(call, backoff(slept)) == "answer"
    assert len(slept) == 3
    for pause, bound in zip(slept, (0.5, 1.0, 2.0), strict=True):
        assert 0 <= pause <= bound


def test_gives_up_after_the_retries_with_the_last_error() -> None:
    slept: list[float] = []

    def call() -> str:
        raise ollama.ResponseError("busy", 503)

    with pytest.raises(ollama.ResponseError):
        retrying(call, backoff(slept, retries=2))
    assert len(slept) == 2


def test_a_lasting_error_is_not_retried() -> None:
    slept: list[float] = []

    def call() -> str:
        raise ollama.ResponseError("missing", 404)

    with pytest.raises(ollama.ResponseError):
        retrying(call, backoff(slept))
    assert slept == []


def test_a_stream_is_retried_only_before_its_first_chunk() -> None:
    slept: list[float] = []
    starts = []

    def cut_before() -> Iterator[str]:
        starts.append("x")
        if len(starts) == 1:
            raise httpx.RemoteProtocolError("cut before anything")
        yield from ["a", "b"]

    assert list(retrying_stream(cut_before, backoff(slept))) == ["a", "b"]
    assert len(starts) == 2

    def cut_after() -> Iterator[str]:
        yield "a"
        raise httpx.RemoteProtocolError("cut mid-way")

    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        for chunk in retrying_stream(cut_after, backoff(slept)):
            got.append(chunk)
    assert got == ["a"], "text already shown is never repeated"
