"""`llamapipe serve`: the pipelines over HTTP, and a page to chat with your documents.

    from llamapipe_app.web import create_app
    app = create_app(load_settings())          # an ASGI app: uvicorn.run(app, port=8765)

- app.py       builds the FastAPI app: routes for the page, the API and eval reports
- api.py       the HTTP API (chat, RAG and PAL, streamed as server-sent events; sessions,
               sources, eval runs), with pydantic models as its schemas
- services.py  what the routes share: the Toolkit (model, index, sessions, sandbox)
- guard.py     every request: a loopback Host, the token, a bounded body, security headers
- static/      the page's script; its HTML is templates/app.html (extending evals' base.html)
"""

from llamapipe_app.web.app import create_app

__all__ = ["create_app"]
