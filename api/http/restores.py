"""Restore Records: start, read, task log, Stop."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api import params, schemas
from api.http.common import _restore_id, _run_filters, command, done, get_record, list_records, rt
from api.http.events import task_log
from domain.run import RESTORE_STATUSES

RESTORE_OPTIONS = (
    "collections",
    "mapping",
    "existing",
    "dry_run",
    "keep_owners",
    "trust_unverified",
    "validate",
)


async def create_restore(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.RESTORE_CREATE, data)
    options = {k: data[k] for k in RESTORE_OPTIONS if k in data}
    if "policy_id" in data:  # a continuous policy, to a moment or a WAL position
        policy_id = params.uuid_param(data["policy_id"], "policy_id")
        to = {k: data[k] for k in ("to_time", "to_lsn") if k in data}
        outcome = await command(
            request, rt(request).app.restore_to, policy_id, data.get("target"), {**options, **to},
            params.actor(request),
        )  # fmt: skip
    else:
        snapshot_id = params.uuid_param(data["snapshot_id"], "snapshot_id")
        outcome = await command(
            request, rt(request).app.request_restore, snapshot_id, data.get("target"), options,
            params.actor(request),
        )  # fmt: skip
    rt(request).nudge_worker()
    return await done(request, outcome, 202)


async def list_restores(request: Request) -> Response:
    return await list_records(request, "restores", _run_filters(request, RESTORE_STATUSES))


async def get_restore(request: Request) -> Response:
    return await get_record(request, "restores", _restore_id(request), "restore")


async def restore_log(request: Request) -> Response:
    return await task_log(request, _restore_id(request), "restore")


async def stop_restore(request: Request) -> Response:
    outcome = await command(
        request, rt(request).app.stop_restore, _restore_id(request), params.actor(request)
    )
    return await done(request, outcome)
