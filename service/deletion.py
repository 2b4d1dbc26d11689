"""Deleting a policy or a snapshot together with its archives, and the plan of what a
delete would remove. Archives go first, so no event claims a removal that did not happen."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.application import Snapledger
from domain.errors import InvalidTransition
from domain.ledger import Outcome
from domain.snapshot import DELETED, HAS_ARCHIVE, RUNNING
from service.window import remove_segments
from transfer.runs.backup import remove_archive
from transfer.storage import Storage


def plan(subject: Any, snaps: list[Any], dry_run: bool = True, position: int = 0) -> Outcome:
    """Exactly which snapshots (and archive bytes) a delete removes, or would remove."""
    now = datetime.now(UTC)
    rows = []
    for s in snaps:
        row = {"id": str(s.id), "sub_name": s.sub_name, "policy_name": s.policy_name,
               "archive_key": s.archive_key, "storage": s.storage, "bytes": s.bytes}  # fmt: skip
        try:
            s.check_deletable(now)
        except InvalidTransition as e:
            row["refused"] = e.message
        rows.append(row)
    extra = {
        "dry_run": dry_run,
        "snapshots": rows,
        "count": len(rows),
        "bytes": sum(r["bytes"] for r in rows if "refused" not in r),
    }
    return Outcome(subject, position, extra)


def delete_policy(
    app: Snapledger, storages: dict[str, Storage], policy_id: str, keep_files: bool, actor: str,
    dry_run: bool = False,
) -> Outcome:  # fmt: skip
    """Every archive is checked deletable (object lock) before the first one is removed."""
    doomed = [] if keep_files else app.policy_archives(policy_id)
    if dry_run:
        app.get_policy(policy_id)  # 404 for an unknown policy, as without dry_run
        return plan(policy_id, doomed)
    now = datetime.now(UTC)
    where = {}
    for snap in doomed:
        snap.check_deletable(now)
        storage = storages.get(snap.storage)
        if storage is None:
            raise InvalidTransition(
                f"storage {snap.storage!r} of {snap.sub_name} is no longer configured; "
                "delete keeping the files"
            )
        where[snap.id] = storage
    removed: set[UUID] = set()
    for snap in doomed:
        remove_segments(app, where[snap.id], snap)
        remove_archive(where[snap.id], snap.archive_key)
        removed.add(snap.id)
    return app.record_policy_deleted(policy_id, keep_files, actor, removed)


def delete_snapshot(
    app: Snapledger, storages: dict[str, Storage], snapshot_id: str, actor: str, dry_run: bool = False
) -> Outcome:
    snap = app.get_snapshot(snapshot_id)
    if snap.status == DELETED:
        raise InvalidTransition(f"snapshot {snap.sub_name} is already deleted")
    snap.check_deletable(datetime.now(UTC))
    if dry_run:
        return plan(snap.id, [snap] if snap.status in HAS_ARCHIVE else [])
    removed = False
    if snap.status != RUNNING:  # a running worker removes its own partial archive
        storage = storages.get(snap.storage)
        if storage is not None:
            remove_segments(app, storage, snap)  # a window's changes restore nothing without it
            remove_archive(storage, snap.archive_key)
            removed = snap.status in HAS_ARCHIVE
    return app.delete_snapshot(snapshot_id, removed, actor)
