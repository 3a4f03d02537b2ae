"""`llamapipe serve`: the web page and the HTTP API (web/), on loopback unless a token is set."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from typing import Annotated, Optional

import typer

from llamapipe_app.commands import common
from llamapipe_app.commands.common import err, out, with_model_flags
from llamapipe_app.commands.rag import IndexFlag
from pipelines.errors import UsageError
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
    """Chat with your documents in a browser (click a citation: see it in its source), and
    the pipelines as an HTTP API (/docs). The model server comes from the settings."""
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

    from llamapipe_app.web import create_app

    app = create_app(settings, index=where, token=token, loopback_only=loopback, backend=backend)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    out.print(f"llamapipe is serving on {url}  (API: /docs · Ctrl-C stops)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    err.print("[dim]stopped[/dim]")


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
