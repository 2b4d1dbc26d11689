"""The Event Log: global, of a policy's cycle, of one task; replayed from the stream itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import params
from api.http.common import _policy_id, call, live_policy, rt
from api.records import Records
from api.runtime import Runtime
from domain.errors import NotFound
from projections.eventlog import topics_for


def _policy_events(runtime: Runtime, policy_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    policy = runtime.app.get_policy(policy_id)
    ids = [policy.id, *policy.snapshot_ids]
    records = Records(runtime.views)
    ids += [UUID(r) for r in records.restore_ids_of_policy(policy_id)]
    ids += [UUID(d) for d in records.drill_ids_of_policy(policy_id)]
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


async def task_log(request: Request, aggregate_id: str, kind: str) -> Response:
    runtime = rt(request)
    lim = params.limit(request, 500)
    getter = runtime.app.get_snapshot if kind == "snapshot" else runtime.app.get_restore
    await call(getter, aggregate_id)  # 404 for an unknown id
    entries = await call(
        runtime.eventlog.for_aggregates, [UUID(aggregate_id)], params.non_negative(request, "after"), lim
    )
    return event_page(entries, lim)


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
