"""Checks every request passes before any route sees it, as one plain ASGI middleware.

- Host: on loopback, only loopback names. A web page elsewhere cannot reach the server by
  pointing a name of its own at 127.0.0.1 (DNS rebinding).
- Token: when the server is reachable beyond loopback, every request carries it, as
  `Authorization: Bearer T`, the cookie the page gets, or `?token=T` (which sets the
  cookie, so a link with the token opens the page).
- Body: at most `max_body` bytes, by Content-Length and by what actually arrives.
- Headers: a Content-Security-Policy that runs only the page's own script (a second wall
  behind escaping), no sniffing, no framing, no referrer.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "llamapipe_token"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class Guard:
    def __init__(
        self, app: ASGIApp, *, token: str | None, loopback_only: bool, max_body: int
    ) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback_only and _hostname(headers.get("host", "")) not in LOOPBACK_NAMES:
            await _refuse(send, 421, "this server answers only to a loopback name",
                          "open it as http://127.0.0.1:PORT/")  # fmt: skip
            return
        set_cookie = False
        if self.token is not None:
            given, from_query = _token(scope, headers)
            if given is None or not secrets.compare_digest(given, self.token):
                await _refuse(send, 401, "a token is needed",
                              "open the address `llamapipe serve` printed, with ?token=, or "
                              "send Authorization: Bearer TOKEN")  # fmt: skip
                return
            set_cookie = from_query
        declared = headers.get("content-length", "0")
        fits = declared.isdigit() and int(declared) <= self.max_body
        if fits and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            # Read the (small) body here, counting, so an endless one is refused before any
            # route parses it; the route then reads it from memory.
            body, fits = await _read_body(receive, self.max_body)
            receive = _replay(body, receive)
        if not fits:
            await _refuse(send, 413, f"the request body is over {self.max_body} bytes",
                          "send less text at once")  # fmt: skip
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    extra.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    parts, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"", True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        parts.append(chunk)
        more = message.get("more_body", False)
    return b"".join(parts), True


def _replay(body: bytes, receive: Receive) -> Receive:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()  # later: disconnects

    return replayed


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8765
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
    """(the token the request carries, whether it came in the query string)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no token
        cookie = SimpleCookie()
    if COOKIE in cookie:
        return cookie[COOKIE].value, False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return query["token"][0], True
    return None, False


async def _refuse(send: Send, status: int, message: str, hint: str) -> None:
    body = json.dumps({"error": message, "hint": hint}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
