"""The FastAPI app: the page at /, the API under /api (its OpenAPI page at /docs), eval
history and reports under /evals, the page's script under /static."""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from evals.html import render
from llamapipe_app.web import api
from llamapipe_app.web.guard import Guard
from llamapipe_app.web.logs import AccessLog, server_error
from llamapipe_app.web.services import Services
from pipelines import __version__
from pipelines.errors import (
    BackendError,
    ContextOverflowError,
    LlamapipeError,
    ModelMissingError,
    ServerUnreachableError,
    UsageError,
)
from pipelines.toolkit import Toolkit

if TYPE_CHECKING:
    from pipelines.settings import Settings

WEB = "llamapipe_app.web"  # its templates/ and static/ are package data
STATIC = str(files(WEB) / "static")
MAX_BODY = 256 * 1024  # bytes in one request: a long question, never a document


def create_app(
    settings: Settings,
    *,
    index: Path | None = None,
    token: str | None = None,
    loopback_only: bool = True,
    backend: Any = None,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """The app. `index`: default <data_dir>/index. `token`: every request must carry it.
    `loopback_only`: refuse requests addressed to any but a loopback name (the server is
    bound to loopback). `backend`: a loaded pipelines.backends.Backend (default: the one
    the settings choose, loaded on the first call that needs it)."""
    kit = Toolkit(settings, backend=backend)
    svc = Services(toolkit=kit, index_path=kit.index_path(index), token_required=token is not None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        svc.close()

    app = FastAPI(
        title="llamapipe",
        version=__version__,
        description="Chat, RAG with checkable citations and PAL over a local Llama.",
        docs_url=None,  # the default page fetches Swagger UI from a CDN: ours is local
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _mount_swagger(app)
    _pages(app, svc)
    _errors(app)
    app.add_middleware(Guard, token=token, loopback_only=loopback_only, max_body=max_body)
    app.add_middleware(AccessLog)  # outermost: it logs what the Guard refuses too
    return app


def _pages(app: FastAPI, svc: Services) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render("app.html", WEB, version=__version__)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return render("docs.html", WEB)

    @app.get("/evals/", response_class=HTMLResponse, include_in_schema=False)
    def history() -> str:
        from evals.report import history_specs

        specs = history_specs(svc.evals_dir, lambda run_id: f"/evals/runs/{quote(run_id)}")
        return render("history.html", WEB, specs=specs, back="/")

    @app.get("/evals/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def report(run_id: str) -> str:
        path = api.known_run(svc, run_id) / "report.html"
        if not path.exists():
            raise HTTPException(404, f"run {run_id} has no report yet")
        return path.read_text(encoding="utf-8")


def _mount_swagger(app: FastAPI) -> None:
    """Swagger UI's files as fastapi-offline ships them (a recent Swagger UI 5, which reads
    OpenAPI 3.1); its page is ours (templates/docs.html), with no inline script."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")


STATUS = [  # the first that matches
    (ModelMissingError, 503),
    (ServerUnreachableError, 503),
    (BackendError, 502),
    (ContextOverflowError, 413),
    (UsageError, 400),
    (LlamapipeError, 500),
]


def _errors(app: FastAPI) -> None:
    """Every error as {error, hint}, with the hint the CLI would give."""

    @app.exception_handler(LlamapipeError)
    async def llamapipe_error(request: Request, exc: LlamapipeError) -> JSONResponse:
        status = next(code for kind, code in STATUS if isinstance(exc, kind))
        if status >= 500:
            server_error(f"{request.method} {request.url.path}", exc)
        return JSONResponse({"error": exc.message, "hint": exc.hint or ""}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "hint": ""}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"error": f"{where}: {first['msg']}" if where else first["msg"],
             "hint": "see the request schemas at /docs"},
            status_code=422,
        )  # fmt: skip
