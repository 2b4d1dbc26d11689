"""The routes and the Starlette application that serves them, the probes and the console."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from api.auth import AuthMiddleware, BodyTooLarge
from api.availability import UNAVAILABLE
from api.http.backups import (
    backup_deletion_plan,
    backup_log,
    backup_segments,
    delete_backup,
    download_backup,
    get_backup,
    list_backups,
    stop_backup,
)
from api.http.common import STATIC, error, rt
from api.http.drills import get_drill, request_drill
from api.http.errors import (
    ContainErrors,
    WatchDatabase,
    domain_error,
    storage_error,
    too_large,
    unavailable,
    unexpected,
)
from api.http.events import global_events, policy_events
from api.http.policies import (
    create_policy,
    delete_policy,
    edit_policy,
    get_policy,
    list_policies,
    policy_deletion_plan,
    rebuild_policy,
    stop_policy,
    take_snapshot,
)
from api.http.restores import create_restore, get_restore, list_restores, restore_log, stop_restore
from api.http.storages import list_storages, run_retention, sync_storage
from api.http.stream import stream
from api.openapi import document
from api.runtime import Runtime
from domain.errors import DomainError
from transfer.storage import StorageError


async def openapi(request: Request) -> Response:
    from transfer.runs.contract import VERSION

    return JSONResponse(document(VERSION, rt(request).app.catalog))


async def healthz(request: Request) -> Response:
    """The process is up: answered from memory, never waiting on the database (whether
    that answers is /readyz's question; here it is only reported)."""
    runtime = rt(request)
    return JSONResponse(
        {
            "status": "ok",
            "database": runtime.config.database.kind,
            "database_answers": runtime.watch.up,
            "worker": runtime.worker is not None,
        },
        headers={"Cache-Control": "no-store"},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error(exc.status_code, exc.detail or "error", None)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # every method of the path, not only those of one route
        response.headers["Allow"] = ", ".join(_allowed(request))
    return response


def _allowed(request: Request) -> list[str]:
    return sorted(
        {
            m
            for r in ROUTES
            if isinstance(r, Route) and r.matches(request.scope)[0] != Match.NONE
            for m in r.methods or ()
        }
    )


async def api_fallback(request: Request) -> Response:
    """Under /api and the probes, an unknown path is a JSON 404 and a known path asked with
    another method a 405 naming the methods it has (the console's files would answer else)."""
    allowed = _allowed(request)
    if allowed:
        return JSONResponse(
            {"error": f"{request.method} is not a method of {request.url.path}", "field": None},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )
    return error(404, "Not Found", None)


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


ROUTES = [
    Route("/healthz", healthz),
    Route("/api/v1/healthz", healthz),
    Route("/api/v1/policies", list_policies, methods=["GET"]),
    Route("/api/v1/policies", create_policy, methods=["POST"]),
    Route("/api/v1/policies/{policy_id}", get_policy, methods=["GET"]),
    Route("/api/v1/policies/{policy_id}", edit_policy, methods=["PATCH"]),
    Route("/api/v1/policies/{policy_id}", delete_policy, methods=["DELETE"]),
    Route("/api/v1/policies/{policy_id}/snapshots", take_snapshot, methods=["POST"]),
    Route("/api/v1/policies/{policy_id}/stop", stop_policy, methods=["POST"]),
    Route("/api/v1/policies/{policy_id}/rebuild", rebuild_policy, methods=["POST"]),
    Route("/api/v1/policies/{policy_id}/events", policy_events, methods=["GET"]),
    Route("/api/v1/policies/{policy_id}/deletion-plan", policy_deletion_plan, methods=["GET"]),
    Route("/api/v1/backups", list_backups, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}", get_backup, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}", delete_backup, methods=["DELETE"]),
    Route("/api/v1/backups/{snapshot_id}/log", backup_log, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}/segments", backup_segments, methods=["GET"]),
    Route("/api/v1/policies/{policy_id}/drill", request_drill, methods=["POST"]),
    Route("/api/v1/drills/{drill_id}", get_drill, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}/deletion-plan", backup_deletion_plan, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}/download", download_backup, methods=["GET"]),
    Route("/api/v1/backups/{snapshot_id}/stop", stop_backup, methods=["POST"]),
    Route("/api/v1/restores", list_restores, methods=["GET"]),
    Route("/api/v1/restores", create_restore, methods=["POST"]),
    Route("/api/v1/restores/{restore_id}", get_restore, methods=["GET"]),
    Route("/api/v1/restores/{restore_id}/log", restore_log, methods=["GET"]),
    Route("/api/v1/restores/{restore_id}/stop", stop_restore, methods=["POST"]),
    Route("/api/v1/storages", list_storages, methods=["GET"]),
    Route("/api/v1/storages/{storage}/sync", sync_storage, methods=["POST"]),
    Route("/api/v1/retention/run", run_retention, methods=["POST"]),
    Route("/api/v1/events", global_events, methods=["GET"]),
    Route("/api/v1/stream", stream, methods=["GET"]),
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
]


def create_app(runtime: Runtime, start: bool = True, worker: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start:
            runtime.start(worker=worker)
        try:
            yield
        finally:
            if start:
                await run_in_threadpool(runtime.close)

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BodyTooLarge: too_large,
        **dict.fromkeys(UNAVAILABLE, unavailable),
        DomainError: domain_error,
        StorageError: storage_error,
        HTTPException: http_error,
        Exception: unexpected,
    }
    from api.observability import ROUTES as OBSERVABILITY_ROUTES

    middleware = [
        Middleware(ContainErrors),
        Middleware(WatchDatabase, runtime=runtime),
        Middleware(
            AuthMiddleware, tokens=runtime.config.tokens, max_body_bytes=runtime.config.max_body_bytes
        ),
    ]
    console = Mount("/", app=StaticFiles(directory=STATIC, html=True), name="console")
    fallback = [
        Route(path, api_fallback, methods=list(ANY_METHOD)) for path in ("/api/{rest:path}", "/healthz")
    ]
    app = Starlette(
        routes=[*ROUTES, *OBSERVABILITY_ROUTES, *fallback, console],
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.runtime = runtime
    return app
