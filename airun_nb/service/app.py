"""The ASGI application: ``create_app(db)`` builds the API, the pages and the event stream."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from airun_nb import __version__
from airun_nb.errors import AirunError
from airun_nb.gates import followup, links
from airun_nb.service import api, pages
from airun_nb.service.auth import SESSION_COOKIE, LoginLimiter, Sessions, status_of
from airun_nb.service.guard import LOOPBACK_HOSTS, Guard
from airun_nb.store.opening import open_store

log = logging.getLogger("airun_nb.service")
DESCRIPTION = """Approve, reject and follow airun_nb workflow runs from outside the notebook.

Every request except `GET /v1/health` carries `Authorization: Bearer <token>`; tokens come from
`airun token create USER`. Errors are JSON `{"error": "one line"}` with a fitting status code.
"""


def create_app(
    db: str | os.PathLike[str] | None = None,
    *,
    url: str = "http://127.0.0.1:8765",
    secure_cookies: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> FastAPI:
    """The application over the store ``db``; ``url`` is the address links point at. Requests
    must name ``url``'s host, a loopback name or one of ``allowed_hosts`` in their ``Host``."""
    store = open_store(db)
    settings = links.ensure_settings(store.path, url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The service watches the open gates: their reminders and escalations fire from here
        # too (each once, whoever else watches).
        watcher = followup.Watcher(store.path).start()
        try:
            yield
        finally:
            watcher.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="airun_nb approvals",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # the OpenAPI UIs load their code from a CDN: /docs is our own page
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.secret = links._secret(settings)
    app.state.sessions = Sessions()
    app.state.logins = LoginLimiter()
    app.add_middleware(
        SessionMiddleware,
        secret_key=str(app.state.secret),
        session_cookie=SESSION_COOKIE,
        same_site="lax",
        https_only=secure_cookies,
        max_age=12 * 3600,
    )
    hosts = [*LOOPBACK_HOSTS, urlsplit(url).hostname or "", *allowed_hosts]
    app.add_middleware(Guard, allowed_hosts=hosts)  # outermost: before sessions and routes
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if pages.wants_html(request):
            return pages.error_page(request, exc.status_code, str(exc.detail))
        headers = getattr(exc, "headers", None)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"error": f"{where or 'request'}: {first.get('msg', 'invalid input')}"},
            status_code=400,
        )

    @app.exception_handler(AirunError)
    async def _airun_error(request: Request, exc: AirunError) -> Any:
        code = status_of(exc)
        if pages.wants_html(request):
            return pages.error_page(request, code, exc.message)
        return JSONResponse({"error": exc.message}, status_code=code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        log.exception("airun serve: %s %s failed", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); the service log has the details"
        if pages.wants_html(request):
            return pages.error_page(request, 500, message)
        return JSONResponse({"error": message}, status_code=500)

    return app
