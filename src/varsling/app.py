"""create_app(settings): middleware, error handling, routers."""

from __future__ import annotations

import logging
import re

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from varsling import argon2_memory, audit, audit_routes, secrets_binding, statistics_routes
from varsling.accounts import lifecycle_routes
from varsling.accounts import routes as account_routes
from varsling.cases import identity_routes
from varsling.cases import routes as case_routes
from varsling.config import ConfigError, Settings, load_settings
from varsling.crypto import CryptoError
from varsling.db import in_transaction, make_engine, make_sessionmaker
from varsling.errors import PayloadTooLarge, RefusalEvent, VarslingError, error_body
from varsling.openapi import install_openapi
from varsling.reports import routes as report_routes

log = logging.getLogger("varsling")


class BodyLimitMiddleware:
    """Refuse request bodies over the limit (413) before a route acts on them.

    Multipart uploads may carry files, so they get room for the file limits
    too, and are counted as they stream; other bodies without a declared
    length are read up to the limit first. The reporter pages' forms get four
    times the room: the form itself drops files past the limits and shows the
    reporter's text again, which a 413 here could not.
    """

    PAGE_UPLOAD_FACTOR = 4

    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        multipart = content_type.startswith("multipart/form-data")
        limit = self.upload_limit if multipart else self.json_limit
        if multipart and not str(scope.get("path", "")).startswith("/api/"):
            limit *= self.PAGE_UPLOAD_FACTOR
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await _too_large(scope, receive, send, limit)
                return
            await self.app(scope, receive, send)
            return
        if not multipart:
            buffered, complete = await _read_up_to(receive, limit)
            if not complete:
                await _too_large(scope, receive, send, limit)
                return
            await self.app(scope, _replay(buffered, receive), send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            return message

        await self.app(scope, counting_receive, send)


async def _read_up_to(receive: Receive, limit: int) -> tuple[list[Message], bool]:
    """The body's messages, and whether it ended within `limit` bytes."""
    messages: list[Message] = []
    seen = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        seen += len(message.get("body", b""))
        if seen > limit:
            return messages, False
        if not message.get("more_body", False):
            return messages, True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    request = Request(scope, receive)
    response = too_large_answer(request, f"The request body is larger than {limit} bytes.")
    await response(scope, receive, send)


_PAGE_LANGUAGE = re.compile(r"^/(nb|nn|en)(/|$)")


def too_large_answer(request: Request, message: str) -> Response:
    """413: a page in the reporter's language on the reporter pages, JSON elsewhere."""
    from varsling.web.i18n import is_language
    from varsling.web.pages import too_large_page

    match = _PAGE_LANGUAGE.match(request.url.path)
    if match is not None and is_language(language := match.group(1)):
        return too_large_page(request, language)
    return JSONResponse(error_body("payload_too_large", message), status_code=413)


# How much of a request body the service still reads, and for how long, after
# deciding to answer without it (a refusal), so that the client reads the answer
# instead of a reset connection. Past either bound the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 30.0


class DrainUnreadBody:
    """A client still sending must get the answer, not a reset connection.

    An answer given before the body was read (a 413, a 401, a 429) leaves the
    rest of the body on the wire; uvicorn would stop reading and keep the
    connection open, and closing a socket with unread data resets it, so the
    client, still writing, never sees the answer. Before such an answer starts,
    the rest of the body is read and thrown away (up to DRAIN_BYTES, for up to
    DRAIN_SECONDS), and the answer carries `Connection: close`, so the
    connection ends with an orderly close once the client has everything.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        has_body = b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (
            declared.strip() not in (b"", b"0")
        )
        waits_for_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        finished = not has_body
        received_any = False

        async def tracking_receive() -> Message:
            nonlocal finished, received_any
            message = await receive()
            received_any = True
            if message["type"] != "http.request" or not message.get("more_body", False):
                finished = True
            return message

        async def draining_send(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start" and not finished:
                MutableHeaders(scope=message)["connection"] = "close"
                # A client waiting for "100 Continue" has sent nothing, and will not.
                if received_any or not waits_for_continue:
                    finished = await _drain(receive)
            await send(message)

        await self.app(scope, tracking_receive, draining_send)


async def _drain(receive: Receive) -> bool:
    """Read the rest of the body and drop it; whether it ended within the bounds."""
    drained = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return True
            drained += len(message.get("body", b""))
    return False


class ErrorGuard:
    """The outermost layer: no exception gets past it, so none reaches the server's log.

    Starlette answers an unexpected exception through the `Exception` handler
    and then raises it again, and uvicorn would log it with its traceback,
    whose messages and local variables can hold case content or codes. Here
    it is logged as its type and the route's path template only; the client
    gets the JSON 500 unless an answer had already begun.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the guard's whole purpose: nothing escapes
            log.error("unhandled %s on %s", type(exc).__name__, _route_template(scope))
            if scope["type"] == "http" and not started:
                await _internal_error(scope, receive, send)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/cases/{case_id}`), never the path itself."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "(no route)"


async def _internal_error(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        error_body("internal_error", "Something went wrong; nothing was saved."), status_code=500
    )
    try:
        await response(scope, receive, send)
    except Exception as exc:  # the client went away; there is nobody left to answer
        log.error("could not answer the error: %s", type(exc).__name__)


class VarslingApp(FastAPI):
    """FastAPI with `ErrorGuard` around everything, Starlette's own error layer included."""

    def build_middleware_stack(self) -> ASGIApp:
        return ErrorGuard(super().build_middleware_stack())


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed_json", "The request body is not valid JSON."
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return 422, "invalid_input", "; ".join(parts)


def _record_refusal(session: Session, refusal: RefusalEvent) -> None:
    audit.record(
        session,
        actor=refusal.actor,
        action=refusal.action,
        case_id=refusal.case_id,
        details=refusal.details,
    )


def install_error_handlers(app: FastAPI) -> None:
    from varsling.web import staff_pages

    @app.exception_handler(VarslingError)
    async def _domain(request: Request, exc: VarslingError) -> Response:
        if exc.refusal is not None:
            await run_in_threadpool(
                in_transaction, request.app.state.sessionmaker, _record_refusal, exc.refusal
            )
        if staff_pages.is_staff_path(request.url.path):
            # The staff pages answer a refusal as the API does, as a page.
            return staff_pages.error_page(request, exc)
        if isinstance(exc, PayloadTooLarge):
            return too_large_answer(request, exc.message)
        return JSONResponse(
            {**error_body(exc.code, exc.message), **exc.body_extra},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        return JSONResponse(error_body(code, message), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(CryptoError)
    async def _crypto(_request: Request, exc: CryptoError) -> JSONResponse:
        # A key that does not open is a data problem, never the caller's to see.
        log.error("crypto check failed: %s", type(exc).__name__)
        return JSONResponse(
            error_body("integrity_error", "Stored data did not pass its integrity check."),
            status_code=500,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__)
        return JSONResponse(
            error_body("internal_error", "Something went wrong; nothing was saved."),
            status_code=500,
        )


def create_app_from_environment() -> FastAPI:
    """The service for one of `varsling serve --workers N`'s processes.

    Settings come from the environment and the secrets file, as for the command
    that started the workers and already checked them against the database.
    """
    return create_app(load_settings())


def create_app(settings: Settings) -> FastAPI:
    """The service. Refuses to start on unsafe settings (ConfigError)."""
    settings.check()
    argon2_memory.configure(settings.argon2_concurrency)
    app = VarslingApp(
        title="Varsling",
        version="0.1.0",
        description="Confidential, end-to-end encrypted whistleblowing service.",
        openapi_url="/api/v1/openapi.json",
        # Swagger UI loads from a CDN with inline script; the CSP forbids both.
        docs_url=None,
        redoc_url=None,
    )
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    # Secrets the database has recorded must be these; `varsling serve` records new ones.
    try:
        with app.state.sessionmaker() as session:
            secrets_binding.verify_binding(session, settings)
    except ConfigError:
        engine.dispose()
        raise

    install_error_handlers(app)
    install_openapi(app)
    for router in (
        report_routes.router,
        account_routes.router,
        lifecycle_routes.router,
        case_routes.router,
        identity_routes.router,
        audit_routes.router,
        statistics_routes.router,
    ):
        app.include_router(router)

    from varsling.web.routes import install_web

    # Added first, so it runs inside the security headers: a 413 carries them too.
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_body_bytes,
        upload_limit=settings.max_body_bytes
        + settings.max_files_per_report * settings.max_file_bytes,
    )
    install_web(app, settings)
    # Added last, so it is the outermost: every early answer drains what is left.
    app.add_middleware(DrainUnreadBody)
    return app
