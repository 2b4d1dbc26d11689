"""The JSON API (Starlette). Mutations answer once the record views show the change."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from api import params, schemas
from api.auth import AuthMiddleware, BodyTooLarge
from api.availability import UNAVAILABLE, DatabaseWatch, attempt, guarded
from api.openapi import document
from api.records import BACKUP_STATUSES, POLICY_STATUSES, Records, backup_row, policy_row, restore_row
from api.runtime import Runtime
from domain.application import Outcome
from domain.errors import Conflict, DomainError, Gone, InvalidTransition, InvalidValue, NotFound
from domain.policy import BackupPolicy
from domain.snapshot import DELETED, HAS_ARCHIVE
from domain.values import is_digits
from projections.eventlog import topics_for
from transfer.storage import LocalStorage, S3Storage, StorageError

log = logging.getLogger("snapledger.api")
_watch: contextvars.ContextVar[DatabaseWatch | None] = contextvars.ContextVar("watch", default=None)
API_BASE = "/api/v1"
STATIC = Path(__file__).resolve().parent / "static"  # the web console: plain files, no build step
STATUS: dict[type[DomainError], int] = {
    params.BadRequest: 400,
    NotFound: 404,
    InvalidTransition: 409,
    Conflict: 409,
    Gone: 410,
    InvalidValue: 422,
}


RESTORE_OPTIONS = ("collections", "mapping", "existing", "dry_run", "keep_owners", "trust_unverified")


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
    body: dict[str, Any] = {"id": str(outcome.id), "position": outcome.position}
    body.update({k: str(v) if isinstance(v, UUID) else v for k, v in outcome.extra.items()})
    body.update(extra)
    if not caught_up:
        body["views_lagging"] = True
    response = JSONResponse(body, status_code=status)
    with_key(request, response)
    return response


# ------------------------------------------------------------------- policies
async def list_policies(request: Request) -> Response:
    filters = {"status": params.choice(request, "status", POLICY_STATUSES), **params.time_range(request)}
    return await list_records(request, "policies", filters)


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


async def create_policy(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.POLICY_CREATE, data)
    outcome = await command(request, rt(request).app.create_policy, data, params.actor(request))
    return await done(request, outcome, 201)


def _policy_id(request: Request) -> str:
    value = params.uuid_param(request.path_params["policy_id"], "policy_id")
    assert value is not None
    return value


async def get_policy(request: Request) -> Response:
    as_of = request.query_params.get("as_of")
    if as_of is None:
        return await get_record(request, "policies", _policy_id(request), "policy")
    await live_policy(request)
    return JSONResponse(await call(_policy_as_of, rt(request), _policy_id(request), as_of))


def _policy_as_of(runtime: Runtime, policy_id: str, as_of: str) -> dict[str, Any]:
    """The policy as it was at a time or position, replayed from its own events."""
    policy = runtime.app.get_policy(policy_id)
    entries = runtime.eventlog.for_aggregates([policy.id], 0, 100_000)
    if is_digits(as_of):
        seen = [e for e in entries if e["position"] <= int(as_of)]
    else:
        try:
            moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidValue("as_of must be an ISO-8601 time or an event position", "as_of") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        seen = [e for e in entries if datetime.fromisoformat(e["time"]) <= moment]
    if not seen:
        raise NotFound(f"policy {policy_id} did not exist at {as_of}", "as_of")
    then: BackupPolicy = runtime.app.repository.get(policy.id, version=seen[-1]["version"])
    return {
        "id": str(then.id),
        "name": then.name,
        "source": then.source,
        "storage": then.storage,
        "schedule": then.schedule,
        "timezone": then.timezone,
        "retention": then.retention,
        "collections": then.collections,
        "status": then.status,
        "created_at": then.created_on.isoformat(),
        "snapshots_count": len(then.snapshot_ids),
        "rebuilds": then.rebuilds,
        "version": then.version,
        "as_of": as_of,
        "position": seen[-1]["position"],
    }


async def edit_policy(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.POLICY_EDIT, data)
    outcome = await command(
        request, rt(request).app.edit_policy, _policy_id(request), data, params.actor(request)
    )
    return await done(request, outcome)


async def policy_deletion_plan(request: Request) -> Response:
    """What Delete would remove: a read, so it is a GET (DELETE ?dry_run=true answers the same)."""
    await live_policy(request)
    keep = params.boolean(request, "keep_files")
    return plan(await call(rt(request).delete_policy, _policy_id(request), keep, params.actor(request), True))


async def delete_policy(request: Request) -> Response:
    keep = params.boolean(request, "keep_files")
    dry_run = params.boolean(request, "dry_run")
    runtime, actor = rt(request), params.actor(request)
    if dry_run:  # writes nothing: no key to record
        await params.request_key(request)  # a malformed key is refused all the same
        return plan(await call(runtime.delete_policy, _policy_id(request), keep, actor, True))
    return await done(
        request, await command(request, runtime.delete_policy, _policy_id(request), keep, actor)
    )


def plan(outcome: Outcome) -> JSONResponse:
    """A dry run's answer: what would go, and nothing written (no position)."""
    subject = {"id": str(outcome.id)} if outcome.id is not None else {}
    return JSONResponse({**subject, **outcome.extra})


async def run_retention(request: Request) -> Response:
    dry_run = params.boolean(request, "dry_run")
    outcome = await call(rt(request).retention_pass, dry_run)
    return JSONResponse({**outcome.extra, "position": outcome.position} if not dry_run else outcome.extra)


async def take_snapshot(request: Request) -> Response:
    outcome = await command(
        request, rt(request).app.request_snapshot, _policy_id(request), params.actor(request)
    )
    rt(request).nudge_worker()
    return await done(request, outcome, 202)


async def stop_policy(request: Request) -> Response:
    outcome = await command(request, rt(request).app.stop_policy, _policy_id(request), params.actor(request))
    return await done(request, outcome)


async def rebuild_policy(request: Request) -> Response:
    outcome = await command(
        request, rt(request).app.rebuild_policy, _policy_id(request), params.actor(request)
    )
    rt(request).nudge_worker()
    return await done(request, outcome, 202)


def _policy_events(runtime: Runtime, policy_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    policy = runtime.app.get_policy(policy_id)
    ids = [policy.id, *policy.snapshot_ids]
    ids += [UUID(r) for r in Records(runtime.views).restore_ids_of_policy(policy_id)]
    return runtime.eventlog.for_aggregates(ids, after, limit)


def event_page(
    entries: list[dict[str, Any]], limit: int, scanned: list[dict[str, Any]] | None = None
) -> JSONResponse:
    """next_cursor is the last position read, so a filtered page still moves on."""
    scanned = entries if scanned is None else scanned
    nxt = str(scanned[-1]["position"]) if len(scanned) == limit else None
    return JSONResponse({"items": entries, "next_cursor": nxt})


def _in_range(
    entries: list[dict[str, Any]], since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if (since is None or datetime.fromisoformat(e["time"]) >= since)
        and (until is None or datetime.fromisoformat(e["time"]) < until)
    ]


async def policy_events(request: Request) -> Response:
    await live_policy(request)
    lim = params.limit(request, 200)
    since, until = params.timestamp(request, "since"), params.timestamp(request, "until")
    entries = await call(
        _policy_events, rt(request), _policy_id(request), params.non_negative(request, "after"), lim
    )
    return event_page(_in_range(entries, since, until), lim, entries)


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


async def list_backups(request: Request) -> Response:
    return await list_records(request, "backups", _run_filters(request, BACKUP_STATUSES))


async def get_backup(request: Request) -> Response:
    return await get_record(request, "backups", _snapshot_id(request), "snapshot")


async def task_log(request: Request, aggregate_id: str, kind: str) -> Response:
    runtime = rt(request)
    lim = params.limit(request, 500)
    getter = runtime.app.get_snapshot if kind == "snapshot" else runtime.app.get_restore
    await call(getter, aggregate_id)  # 404 for an unknown id
    entries = await call(
        runtime.eventlog.for_aggregates, [UUID(aggregate_id)], params.non_negative(request, "after"), lim
    )
    return event_page(entries, lim)


async def backup_log(request: Request) -> Response:
    await live_snapshot(request)
    return await task_log(request, _snapshot_id(request), "snapshot")


async def download_backup(request: Request) -> Response:
    runtime = rt(request)
    snap = await call(runtime.app.get_snapshot, _snapshot_id(request))
    if snap.status == DELETED:
        raise NotFound(f"snapshot {snap.sub_name} was deleted, and its archive with it", "snapshot_id")
    if snap.status not in HAS_ARCHIVE:
        raise InvalidTransition(f"snapshot {snap.sub_name} is {snap.status}: no archive to download")
    storage = runtime.resources.storages.get(snap.storage)
    if storage is None:
        raise InvalidTransition(f"storage {snap.storage!r} is no longer configured")
    if isinstance(storage, S3Storage):
        url = await call(storage.presign, snap.archive_key, snap.file_name, runtime.config.presign_seconds)
        return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    assert isinstance(storage, LocalStorage)
    path = storage.path(snap.archive_key)
    if not path.exists():
        raise StorageError(f"archive of {snap.sub_name} is missing from storage {storage.name!r}")
    return FileResponse(path, media_type="application/x-tar", filename=snap.file_name)


async def stop_backup(request: Request) -> Response:
    outcome = await command(
        request, rt(request).app.stop_snapshot, _snapshot_id(request), params.actor(request)
    )
    return await done(request, outcome)


async def backup_deletion_plan(request: Request) -> Response:
    await live_snapshot(request)
    return plan(await call(rt(request).delete_snapshot, _snapshot_id(request), params.actor(request), True))


async def delete_backup(request: Request) -> Response:
    dry_run = params.boolean(request, "dry_run")
    runtime, actor = rt(request), params.actor(request)
    if dry_run:  # writes nothing: no key to record
        await params.request_key(request)  # a malformed key is refused all the same
        return plan(await call(runtime.delete_snapshot, _snapshot_id(request), actor, True))
    return await done(request, await command(request, runtime.delete_snapshot, _snapshot_id(request), actor))


# ------------------------------------------------------------------- storages
async def list_storages(request: Request) -> Response:
    runtime = rt(request)
    if params.boolean(request, "check"):
        assert runtime.resources.health is not None  # Runtime.build() gives every runtime its board
        await call(runtime.resources.health.check_all)
    return JSONResponse({"items": await call(runtime.storages_status)})


async def sync_storage(request: Request) -> Response:
    report = await call(
        rt(request).sync_storage,
        request.path_params["storage"],
        params.actor(request),
        params.boolean(request, "dry_run"),
    )
    return JSONResponse(report.as_dict())


# ------------------------------------------------------------------- restores
def _restore_id(request: Request) -> str:
    value = params.uuid_param(request.path_params["restore_id"], "restore_id")
    assert value is not None
    return value


async def create_restore(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.RESTORE_CREATE, data)
    snapshot_id = params.uuid_param(data["snapshot_id"], "snapshot_id")
    outcome = await command(
        request,
        rt(request).app.request_restore,
        snapshot_id,
        data.get("target"),
        {k: data[k] for k in RESTORE_OPTIONS if k in data},
        params.actor(request),
    )
    rt(request).nudge_worker()
    return await done(request, outcome, 202)


async def list_restores(request: Request) -> Response:
    return await list_records(request, "restores", _run_filters(request, BACKUP_STATUSES[:-1]))


async def get_restore(request: Request) -> Response:
    return await get_record(request, "restores", _restore_id(request), "restore")


async def restore_log(request: Request) -> Response:
    return await task_log(request, _restore_id(request), "restore")


async def stop_restore(request: Request) -> Response:
    outcome = await command(
        request, rt(request).app.stop_restore, _restore_id(request), params.actor(request)
    )
    return await done(request, outcome)


# ---------------------------------------------------------------- event log
def _scoped_events(
    runtime: Runtime, policy_id: str | None, task_id: str | None, after: int, lim: int
) -> list[dict[str, Any]]:
    """A policy's cycle (the policy, its snapshots and restores) or one task's log, live
    or deleted: history outlives the record."""
    if policy_id is not None:
        try:
            entries = _policy_events(runtime, policy_id, after, lim)
        except NotFound as e:
            raise NotFound(e.message, "policy_id") from None
        return [e for e in entries if task_id is None or e["aggregate_id"] == task_id]
    assert task_id is not None
    try:
        runtime.app.get_snapshot(task_id)
    except NotFound:
        try:
            runtime.app.get_restore(task_id)
        except NotFound:
            raise NotFound(f"no snapshot or restore {task_id}", "task_id") from None
    return runtime.eventlog.for_aggregates([UUID(task_id)], after, lim)


async def global_events(request: Request) -> Response:
    lim = params.limit(request, 200)
    types = [t for raw in request.query_params.getlist("type") for t in raw.split(",") if t]
    since, until = params.timestamp(request, "since"), params.timestamp(request, "until")
    after = params.non_negative(request, "after")
    policy_id = params.uuid_param(request.query_params.get("policy_id"), "policy_id")
    task_id = params.uuid_param(request.query_params.get("task_id"), "task_id")
    if policy_id is None and task_id is None:
        scanned = await call(rt(request).eventlog.global_page, after, lim, types)
        entries = scanned
    else:
        topics_for(types)  # an unknown type is refused by name, as without a scope
        scanned = await call(_scoped_events, rt(request), policy_id, task_id, after, lim)
        entries = [e for e in scanned if not types or e["type"] in types]
    return event_page(_in_range(entries, since, until), lim, scanned)


async def openapi(request: Request) -> Response:
    from transfer.pipeline import VERSION

    return JSONResponse(document(VERSION, rt(request).app.catalog))


STREAM_TABLES = (("policy", "policies", policy_row), ("backup", "backup_records", backup_row),
                 ("restore", "restore_records", restore_row))  # fmt: skip


STREAM_BATCH = 500


def _changes(runtime: Runtime, after: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Changed rows after a position, in position order. When a table has more than a
    batch, nothing past its last delivered row is sent yet, so no change is skipped."""
    out = []
    bound = None
    for kind, table, shape in STREAM_TABLES:
        rows = runtime.views.query(
            f"SELECT * FROM {table} WHERE position > %(after)s ORDER BY position LIMIT {STREAM_BATCH}",
            {"after": after},
        )
        if len(rows) == STREAM_BATCH:
            last = int(rows[-1]["position"])
            bound = last if bound is None else min(bound, last)
        out += [(int(r["position"]), kind, shape(r)) for r in rows]
    return sorted((c for c in out if bound is None or c[0] <= bound), key=lambda c: c[0])


def _running(runtime: Runtime) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for kind, table, shape in STREAM_TABLES[1:]:
        rows = runtime.views.query(f"SELECT * FROM {table} WHERE status = 'running'")
        out += [(int(r["position"]), kind, shape(r)) for r in rows]
    return out


async def stream(request: Request) -> Response:
    """Record changes as they are projected; the SSE id is the position, so a client
    resumes with Last-Event-ID. Running records are repeated every second, so progress
    arrives at least once a second even between progress events."""
    runtime = rt(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    resume = str(params.position(resume, "after"))  # Last-Event-ID, or after
    raw_timeout = request.query_params.get("timeout")
    try:
        timeout = float(raw_timeout) if raw_timeout is not None else None
    except ValueError:
        raise InvalidValue("timeout must be a number of seconds", "timeout") from None

    async def events() -> AsyncIterator[bytes]:
        position = int(resume)
        started = loop_time = time.monotonic()
        yield b"retry: 1000\n\n"
        while timeout is None or time.monotonic() - started < timeout:
            if await request.is_disconnected():
                return
            if runtime.stopping.is_set():  # SIGTERM: end the stream, saying why, so shutdown goes on
                yield b'event: bye\ndata: {"reason": "server stopped"}\n\n'
                return
            for pos, kind, row in await call(_changes, runtime, position):
                position = max(position, pos)
                yield _sse(pos, kind, row)
            if time.monotonic() - loop_time >= 1.0:
                loop_time = time.monotonic()
                for _, kind, row in await call(_running, runtime):
                    yield _sse(position, kind, row)
                yield b": keep-alive\n\n"
            await anyio.sleep(0.2)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _sse(position: int, kind: str, row: dict[str, Any]) -> bytes:
    return f"id: {position}\nevent: {kind}\ndata: {json.dumps(row)}\n\n".encode()


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


# ------------------------------------------------------------------- errors
async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
    return with_key(request, error(status, exc.message, exc.field))


async def too_large(request: Request, exc: Exception) -> Response:
    return error(413, str(exc), "body")


async def storage_error(request: Request, exc: Exception) -> Response:
    return error(502, str(exc), "storage")


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
