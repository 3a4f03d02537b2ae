"""Model calls in flight at once, bounded: what keeps a served model busy (evals, `pal run`).

`bounded(work, inputs, workers)` yields `(input, result)` as each call finishes, with at most
`workers` calls running. Results come back to the caller's thread, which alone writes
results and counts progress, so a run's file is written by one writer, one whole line at a
time. With one worker everything runs in the caller's thread (the embedded model, which has
one context, and tracebacks as plain as before).

Only `workers` calls are ever submitted ahead, so a Ctrl-C or an error leaves at most that
many calls running, never a queue of hundreds; their results are dropped and the items are
asked again on resume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def default_concurrency(backend_name: str) -> int:
    """What the backend declares (providers/): 4 for Ollama (it serves OLLAMA_NUM_PARALLEL
    at once), 8 for an OpenAI-compatible server, 1 for the embedded model (one context)."""
    from pipelines.backends.registry import REGISTRY

    return REGISTRY.concurrency(backend_name)


def bounded(
    work: Callable[[In], Out],
    inputs: Iterable[In],
    workers: int,
    on_flight: Callable[[int], None] | None = None,
) -> Iterator[tuple[In, Out]]:
    """Run `work` on each input, at most `workers` at once; yield results as they finish.

    `on_flight(n)` hears how many calls are running whenever that changes. The first error
    from `work` is raised here at once; calls still running finish in their threads and
    their results are dropped.
    """
    if workers <= 1:
        for item in inputs:
            if on_flight:
                on_flight(1)
            result = work(item)
            if on_flight:
                on_flight(0)
            yield item, result
        return
    pending = iter(inputs)
    running: dict[Future[Out], In] = {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="llamapipe-eval")
    try:
        while True:
            for item in itertools.islice(pending, workers - len(running)):
                running[pool.submit(work, item)] = item
            if on_flight:
                on_flight(len(running))
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item = running.pop(future)
                yield item, future.result()
    finally:
        # Nothing new starts; calls already running finish in their threads (a model call
        # cannot be cancelled) and their results are dropped.
        for future in running:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
