"""`llamapipe serve`: the web page and the HTTP API (web/), on loopback unless a token is set."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from llamapipe_app.commands import common
from llamapipe_app.commands.common import err, out, with_model_flags
from llamapipe_app.commands.rag import IndexFlag
from pipelines.errors import UsageError

if TYPE_CHECKING:
    from pipelines.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@with_model_flags(without=("host",))
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 8765,
    index: IndexFlag = None,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token", help="Every request must carry it (default: LLAMAPIPE_SERVE_TOKEN)."
        ),
    ] = None,
    new_token: Annotated[
        bool, typer.Option("--new-token", help="Make a random token and print the address with it.")
    ] = False,
    *,
    settings: Settings,
) -> None:
    """Chat with your documents in a browser, and the pipelines as an HTTP API.

    Click a citation to see it in its source; the API is described at /docs.
    The model server comes from the settings.
    """
    if new_token:
        token = secrets.token_urlsafe(24)
    elif token is None and settings.serve_token is not None:
        token = settings.serve_token.get_secret_value()
    if token is not None and len(token) < 16:
        raise UsageError("the token is too short to protect anything (under 16 characters)",
                         hint="use --new-token for a random one")  # fmt: skip
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise UsageError(
            f"serving on {host} would let anyone who reaches this machine use the model and "
            "read the indexed documents",
            hint="add --new-token (or --token T, or set LLAMAPIPE_SERVE_TOKEN); or keep the "
            "default --host 127.0.0.1",
        )
    _check_port_free(host, port)
    from pipelines.rag.index import Index

    where = (index or settings.data_dir / "index").expanduser()
    if not Index.exists_at(where):
        err.print(
            f"[yellow]no index at {where}[/yellow]: chat and PAL work; for documents run "
            f"`llamapipe rag ingest PATH --index {where}`",
            highlight=False,
        )
    backend = common.load_model(common.toolkit(settings))

    import uvicorn

    from llamapipe_app.web import create_app, logs

    app = create_app(settings, index=where, token=token, loopback_only=loopback, backend=backend)
    url, note = browser_url(host, port, token)
    out.print(f"llamapipe is serving on {url}  (API: /docs · Ctrl-C stops)", highlight=False)
    if note:
        err.print(f"[dim]{note}[/dim]", highlight=False)
    logs.to_stderr()  # a line per request; uvicorn's access log would print the token
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3)  # fmt: skip
    err.print("[dim]stopped[/dim]")


EVERY_ADDRESS = frozenset({"0.0.0.0", "::", "[::]"})


def browser_url(host: str, port: int, token: str | None) -> tuple[str, str | None]:
    """An address a browser can open, with the token, and a note when the server listens on
    more than it: 0.0.0.0 and :: mean "every address" and open nothing in a browser."""
    query = f"?token={token}" if token else ""
    if host not in EVERY_ADDRESS:
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        return f"http://{shown}:{port}/{query}", None
    v6 = ":" in host
    local = f"http://{'[::1]' if v6 else '127.0.0.1'}:{port}/{query}"
    address = this_host_address(socket.AF_INET6 if v6 else socket.AF_INET)
    if address is None:
        return local, (
            f"listening on every address of this machine ({host}); from another machine, "
            "open this address with the machine's own name or IP in place of "
            f"{'[::1]' if v6 else '127.0.0.1'}"
        )
    shown = f"[{address}]" if v6 else address
    url = f"http://{shown}:{port}/{query}"
    return url, f"listening on every address of this machine ({host}); on this machine also {local}"


def this_host_address(family: socket.AddressFamily) -> str | None:
    """The address this machine reaches others from (the one a route out uses), or None.
    Connecting a UDP socket sends nothing: it only picks the route."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"  # documentation nets
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            address = ipaddress.ip_address(udp.getsockname()[0])
    except (OSError, ValueError):
        return None
    return None if address.is_loopback or address.is_unspecified else str(address)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="pass another --port, or stop what is using this one",
            ) from None
