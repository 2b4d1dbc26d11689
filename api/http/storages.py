"""Storage locations: health, catalog resync; and a retention pass on request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import params
from api.http.common import call, rt


async def run_retention(request: Request) -> Response:
    dry_run = params.boolean(request, "dry_run")
    outcome = await call(rt(request).retention_pass, dry_run)
    return JSONResponse({**outcome.extra, "position": outcome.position} if not dry_run else outcome.extra)


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
