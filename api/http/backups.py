"""Backup Records: read, task log, download, Stop, Delete (and what a delete would remove)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from api import params
from api.http.common import (
    _run_filters,
    _snapshot_id,
    call,
    command,
    done,
    get_record,
    list_records,
    live_snapshot,
    plan,
    rt,
)
from api.http.events import task_log
from api.records import BACKUP_STATUSES
from domain.capture import capture_id
from domain.errors import InvalidTransition, NotFound
from domain.snapshot import DELETED, HAS_ARCHIVE
from transfer.storage import LocalStorage, S3Storage, StorageError


async def list_backups(request: Request) -> Response:
    return await list_records(request, "backups", _run_filters(request, BACKUP_STATUSES))


async def get_backup(request: Request) -> Response:
    return await get_record(request, "backups", _snapshot_id(request), "snapshot")


async def backup_log(request: Request) -> Response:
    await live_snapshot(request)
    return await task_log(request, _snapshot_id(request), "snapshot")


async def backup_segments(request: Request) -> Response:
    """The segments of the capture window that follows this snapshot, in order: what a
    restore to a moment after it replays. `after`: how many to pass over (next_cursor)."""
    runtime = rt(request)
    lim, after = params.limit(request, 100), params.non_negative(request, "after")
    snap = await call(runtime.app.get_snapshot, _snapshot_id(request))
    try:
        capture = await call(runtime.app.get_capture, capture_id(snap.policy_id, snap.id))
    except NotFound:
        return JSONResponse({"items": [], "next_cursor": None})
    chosen = capture.segments[after : after + lim]
    nxt = str(after + lim) if after + lim < len(capture.segments) else None
    return JSONResponse({"items": [segment_record(s) for s in chosen], "next_cursor": nxt})


def segment_record(facts: dict[str, Any]) -> dict[str, Any]:
    """A segment as the API shows it: positions in the source's own terms (a WAL position,
    or an oplog ts), its commits, counts and the checksum a restore checks it against."""
    out = {
        "from_position": facts["from_lsn"], "to_position": facts["to_lsn"],
        "first_commit": facts["first_commit"], "last_commit": facts["last_commit"],
        "transactions": facts["transactions"], "changes": facts["items"], "bytes": facts["bytes"],
        "sha256": facts["sha256"], "key": facts["key"], "encrypted": "encryption" in facts,
    }  # fmt: skip
    return out


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
