"""Server-sent events from a pipeline's `stream`: text as `token` events, then the result.

The pipelines are synchronous; Starlette iterates a plain generator in a worker thread, so a
slow model or a slow reader holds up only its own request. A client that goes away closes
the generator, which stops the pipeline's stream (and with it the model's generation).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.responses import StreamingResponse

from llamapipe_app.web.logs import server_error
from pipelines.errors import LlamapipeError, UsageError


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream_events(make: Callable[[], Iterable[str]]) -> StreamingResponse:
    """`make()` yields formatted events; an error on the way becomes an `error` event (the
    status line has gone out by then), said the way the CLI says it, and goes to the server's
    log unless it is the request's own fault."""

    def events() -> Iterator[str]:
        try:
            yield from make()
        except LlamapipeError as exc:
            if not isinstance(exc, UsageError):
                server_error("error event", exc)
            yield event("error", {"error": exc.message, "hint": exc.hint or ""})
        except Exception as exc:  # a bug: the page still hears that the answer ended
            server_error("error event", exc)
            yield event("error", {"error": "internal server error",
                                  "hint": "the server's log (its stderr) says why"})  # fmt: skip
        yield event("done", {})

    return StreamingResponse(
        events(),
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
