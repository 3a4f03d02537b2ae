"""What `llamapipe serve` says on stderr: one line per request (method, path, status, ms) and
every server error with its traceback. Never the query string (the page's link carries the
token there), headers or bodies.

uvicorn's own access log is off (it prints the query string); this middleware, outermost,
also sees the requests the Guard refuses.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from llamapipe_app.web.guard import SECURITY_HEADERS, ASGIApp, Message, Receive, Scope, Send

LOG = logging.getLogger("llamapipe.web")


def to_stderr() -> None:
    """Send the log to stderr, once (`serve` calls it; tests read it with caplog)."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)


def server_error(what: str, exc: BaseException) -> None:
    """An error the server hit (a 5xx, or an error event in a stream), with its traceback."""
    LOG.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        line = f"{scope['method']} {scope['path']}"
        began = time.perf_counter()
        status: list[int] = []

        async def noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        except Exception as exc:
            server_error(line, exc)
            if status:  # the answer had begun: nothing more can be said on it
                raise
            await _internal_error(send)
            status.append(500)
        finally:
            ms = (time.perf_counter() - began) * 1000
            LOG.info("%s %s %.0f ms", line, status[0] if status else "-", ms)


async def _internal_error(send: Send) -> None:
    body = json.dumps(
        {"error": "internal server error", "hint": "the server's log (its stderr) says why"}
    ).encode()
    length = str(len(body)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", length)]
    headers += SECURITY_HEADERS
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
