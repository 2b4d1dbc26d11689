"""Policies: create, read (as of any time), Edit, Stop, Rebuild, Delete, Take a Snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import params, schemas
from api.http.common import _policy_id, call, command, done, get_record, list_records, live_policy, plan, rt
from api.runtime import Runtime
from domain.errors import InvalidValue, NotFound
from domain.policy import POLICY_STATUSES, BackupPolicy
from domain.values import is_digits


# ------------------------------------------------------------------- policies
async def list_policies(request: Request) -> Response:
    filters = {"status": params.choice(request, "status", POLICY_STATUSES), **params.time_range(request)}
    return await list_records(request, "policies", filters)


async def create_policy(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.POLICY_CREATE, data)
    outcome = await command(request, rt(request).app.create_policy, data, params.actor(request))
    return await done(request, outcome, 201)


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
        "continuous": then.continuous,
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
