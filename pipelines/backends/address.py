"""Server addresses as people write them: `localhost:8000`, `0.0.0.0:11434`, `[::1]:8000`,
`https://gpu.example/v1`. Shared by the Ollama and OpenAI-compatible backends."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipelines.errors import ConfigError

if TYPE_CHECKING:
    import ssl

    import httpx


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str  # ready for a URL: bind-all addresses made loopback, IPv6 in brackets
    port: int | None  # None: not written
    path: str  # without a trailing slash
    had_scheme: bool

    def url(self, port: int | None = None, path: str | None = None) -> str:
        port = self.port or port
        netloc = f"{self.host}:{port}" if port else self.host
        return f"{self.scheme}://{netloc}{self.path if path is None else path}"


def parse_address(text: str, *, what: str, example: str) -> Address:
    """Read `text`; a bad port is a ConfigError naming `what` and an `example` to follow."""
    text = text.strip() or "127.0.0.1"
    had_scheme = "://" in text
    parts = urlsplit(text if had_scheme else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} has an invalid port", hint=f"write it like {example}"
        ) from None
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # bind-all addresses: connect to this machine
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return Address(parts.scheme, host, port, parts.path.rstrip("/"), had_scheme)


def quick_client(url: str, timeout: float, **kwargs: Any) -> httpx.Client:
    """An httpx client for one quick look at a server. Each new client loads the CA bundle
    (~30 ms); plain http uses no TLS (redirects are not followed), so it loads none, and
    https shares one loaded context."""
    import httpx

    verify = _tls() if url.startswith("https:") else False
    return httpx.Client(timeout=timeout, verify=verify, **kwargs)


@functools.cache
def _tls() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()
