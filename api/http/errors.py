"""How failures answer: 4xx naming the field, 503 while the database is away, a contained
500 otherwise (the keep-alive connection stays usable)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.availability import UNAVAILABLE
from api.http.common import STATUS, _watch, error, log, with_key
from api.runtime import Runtime
from domain.errors import DomainError


# ------------------------------------------------------------------- errors
async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
    return with_key(request, error(status, exc.message, exc.field))


async def too_large(request: Request, exc: Exception) -> Response:
    return error(413, str(exc), "body")


async def storage_error(request: Request, exc: Exception) -> Response:
    return error(502, str(exc), "storage")


async def unavailable(request: Request, exc: Exception) -> Response:
    """The database is down or unreachable: say so, and let the client retry."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    response = error(503, "the event store or the record views are unavailable; retry shortly", None)
    response.headers["Retry-After"] = "2"
    return with_key(request, response)


async def unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UNAVAILABLE):
        return await unavailable(request, exc)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error(500, "internal error; see the server log", None)


class WatchDatabase:
    """Hands the runtime's database watch to `call` for the request's duration."""

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = _watch.set(self.runtime.watch)
        try:
            await self.app(scope, receive, send)
        finally:
            _watch.reset(token)


class ContainErrors:
    """An unexpected error answers 500 (or 503) and ends there. Starlette's outermost
    handler re-raises after answering, which made the server drop the keep-alive
    connection: the client's next request on it was reset."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:
                raise  # half an answer is out: only closing the connection is honest
            response = await unexpected(Request(scope), exc)
            await response(scope, receive, send)
