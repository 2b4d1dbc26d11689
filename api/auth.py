"""Bearer-token authentication, roles and the request-size limit, as ASGI middleware.

Tokens come from configuration (each with a name and a role); the name is the actor on
every event a request causes. Without configured tokens the API is open, which `serve`
allows on loopback only. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.config import ApiToken
from domain.values import is_digits

OPEN_PATHS = ("/healthz", "/readyz", "/api/v1/healthz", "/api/v1/openapi.json")
READ_METHODS = ("GET", "HEAD", "OPTIONS")


def identify(tokens: list[ApiToken], header: str | None) -> ApiToken | None:
    """Checks every token whatever matches, so timing tells nothing about which did."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():  # RFC 7235: schemes are case-insensitive
        return None
    offered = credentials.strip().encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(offered, token.token.encode()):
            found = token
    return found


class AuthMiddleware:
    def __init__(self, app: ASGIApp, tokens: list[ApiToken], max_body_bytes: int) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is not None and (not is_digits(length) or int(length) > self.max_body_bytes):
            await _error(413, f"request body is larger than {self.max_body_bytes} bytes", "body")(
                scope, receive, send
            )
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        if self.tokens and _guarded(scope["path"]):
            token = identify(self.tokens, headers.get("authorization"))
            if token is None:
                response = _error(401, "a valid bearer token is required", "Authorization")
                response.headers["WWW-Authenticate"] = 'Bearer realm="snapledger"'
                await response(scope, receive, send)
                return
            if token.role == "viewer" and scope["method"] not in READ_METHODS:
                await _error(403, f"token {token.name!r} may only read (role viewer)", "Authorization")(
                    scope, receive, send
                )
                return
            state["actor"] = token.name
        await self.app(scope, _limited(receive, self.max_body_bytes), send)


def _guarded(path: str) -> bool:
    """The API and metrics need a token; probes, the OpenAPI document and the console's
    static files (which hold no data: it reads everything through the API) do not."""
    return path not in OPEN_PATHS and (path.startswith("/api/") or path == "/metrics")


def _error(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _limited(receive: Receive, limit: int) -> Receive:
    """Bodies sent without Content-Length are cut off at the limit too."""
    seen = 0

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
