"""Restore drills: ask for one of a policy's newest completed snapshot, read one back."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import params, schemas
from api.http.common import _policy_id, call, command, done, rt
from domain.drill import Drill


async def request_drill(request: Request) -> Response:
    data = await params.json_object(request)
    schemas.validate(schemas.DRILL_CREATE, data)
    outcome = await command(
        request, rt(request).app.request_drill, _policy_id(request), data, params.actor(request)
    )
    rt(request).nudge_worker()
    return await done(request, outcome, 202)


async def get_drill(request: Request) -> Response:
    drill_id = params.uuid_param(request.path_params["drill_id"], "drill_id")
    drill = await call(rt(request).app.get_drill, drill_id)
    return JSONResponse(drill_record(drill))


def drill_record(drill: Drill) -> dict[str, Any]:
    """What a drill proved: per collection the rows and digests on both sides, each check's
    answer, the time to restore, or why it failed."""
    return {
        "id": str(drill.id), "policy_id": str(drill.policy_id), "snapshot_id": str(drill.snapshot_id),
        "sub_name": drill.sub_name, "target": drill.target, "scratch": drill.scratch,
        "status": "passed" if drill.status == "completed" else drill.status, "attempt": drill.attempt,
        "rto_seconds": drill.rto_seconds, "reason": drill.reason, "checks": list(drill.checks),
        "result": drill.result,
    }  # fmt: skip
