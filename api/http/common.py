"""What every handler shares: running blocking work off the event loop (503 at once while
the database is away), mutations under their request key, answers once the views show them."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import params
from api.availability import UNAVAILABLE, DatabaseWatch, attempt, guarded
from api.records import Records
from api.runtime import Runtime
from domain.errors import Conflict, DomainError, Gone, InvalidTransition, InvalidValue, NotFound
from domain.ledger import Outcome
from domain.snapshot import DELETED

log = logging.getLogger("snapledger.api")


_watch: contextvars.ContextVar[DatabaseWatch | None] = contextvars.ContextVar("watch", default=None)


API_BASE = "/api/v1"


STATIC = Path(__file__).resolve().parent.parent / "static"  # the web console: plain files, no build step


STATUS: dict[type[DomainError], int] = {
    params.BadRequest: 400,
    NotFound: 404,
    InvalidTransition: 409,
    Conflict: 409,
    Gone: 410,
    InvalidValue: 422,
}


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs blocking work (event store, views, storage) off the event loop; while the
    database does not answer, answers 503 at once instead (see api.availability)."""
    return await attempt(_watch.get(), fn, *args, **kwargs)


async def command(request: Request, fn: Callable[..., Outcome], *args: Any) -> Outcome:
    """Runs a mutation under the request's Idempotency-Key (see domain.idempotency)."""
    key = await params.request_key(request)
    request.state.request_key = key
    outcome: Outcome = await call(rt(request).app.keyed, key, fn, *args)
    return outcome


def with_key(request: Request, response: Response) -> Response:
    """Every answer to a keyed mutation names its key: the one to retry under."""
    key = getattr(request.state, "request_key", None)
    if key is not None:
        response.headers["Idempotency-Key"] = key.key
    return response


async def done(request: Request, outcome: Outcome, status: int = 200, **extra: Any) -> JSONResponse:
    runtime = rt(request)
    try:
        caught_up = await call(runtime.wait, outcome.position)
    except UNAVAILABLE:  # the write is committed: say so, never 503 after it
        caught_up = False
    body = {**outcome.as_dict(), **extra}
    if not caught_up:
        body["views_lagging"] = True
    response = JSONResponse(body, status_code=status)
    with_key(request, response)
    return response


async def list_records(request: Request, kind: str, filters: dict[str, Any]) -> Response:
    runtime = rt(request)
    cursor, limit = params.decode_cursor(request), params.limit(request)
    records = Records(runtime.views)
    if kind == "policies":  # carries storage health, an observation of now: never cached
        items, nxt = await call(records.page, kind, filters, cursor, limit)
        items = [with_storage_health(runtime, p) for p in items]
        return JSONResponse({"items": items, "next_cursor": nxt})

    def render() -> bytes:
        items, nxt = records.page(kind, dict(filters), cursor, limit)
        return cast(bytes, JSONResponse({"items": items, "next_cursor": nxt}).body)  # render() made bytes

    key = (kind, tuple(sorted(filters.items())), cursor, limit)
    body = await guarded(_watch.get(), lambda: runtime.pages.page(key, render))
    return Response(body, media_type="application/json")


def with_storage_health(runtime: Runtime, policy: dict[str, Any]) -> dict[str, Any]:
    """The policy's storage location as this process last found it (not an event: health
    is an observation of now, so it is never replayed)."""
    health = runtime.resources.health.last(policy["storage"]) if runtime.resources.health else None
    return {**policy, "storage_health": health.as_dict() if health else None}


def gone(what: str, name: str, record_id: str) -> NotFound:
    """A deleted record is gone from its own address (404, as for any address that holds
    nothing); its row stays in the lists (status=deleted) and its history in the Event Log."""
    scope = "policy_id" if what == "policy" else "task_id"
    return NotFound(
        f"{what} {name} was deleted; it is listed with status=deleted, and its events are at "
        f"{API_BASE}/events?{scope}={record_id}",
        f"{what}_id",
    )


async def live_policy(request: Request) -> Any:
    policy = await call(rt(request).app.get_policy, _policy_id(request))
    if policy.status == "deleted":
        raise gone("policy", policy.name, str(policy.id))
    return policy


async def live_snapshot(request: Request) -> Any:
    snap = await call(rt(request).app.get_snapshot, _snapshot_id(request))
    if snap.status == DELETED:
        raise gone("snapshot", snap.sub_name, str(snap.id))
    return snap


async def get_record(request: Request, kind: str, row_id: str, what: str) -> Response:
    row = await call(Records(rt(request).views).one, kind, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found", f"{what}_id")
    if row["status"] == "deleted":
        raise gone(what, row.get("name") or row["sub_name"], row_id)
    if kind == "policies":
        row = with_storage_health(rt(request), row)
    return JSONResponse(row)


def _policy_id(request: Request) -> str:
    value = params.uuid_param(request.path_params["policy_id"], "policy_id")
    assert value is not None
    return value


def plan(outcome: Outcome) -> JSONResponse:
    """A dry run's answer: what would go, and nothing written (no position)."""
    subject = {"id": str(outcome.id)} if outcome.id is not None else {}
    return JSONResponse({**subject, **outcome.extra})


# -------------------------------------------------------------------- backups
def _snapshot_id(request: Request) -> str:
    value = params.uuid_param(request.path_params["snapshot_id"], "snapshot_id")
    assert value is not None
    return value


def _run_filters(request: Request, statuses: tuple[str, ...]) -> dict[str, Any]:
    return {
        "policy_id": params.uuid_param(request.query_params.get("policy_id"), "policy_id"),
        "status": params.choice(request, "status", statuses),
        **params.time_range(request),
    }


# ------------------------------------------------------------------- restores
def _restore_id(request: Request) -> str:
    value = params.uuid_param(request.path_params["restore_id"], "restore_id")
    assert value is not None
    return value
