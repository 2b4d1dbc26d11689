"""The second half of a restore to a moment: after the snapshot is in the target, the
capture's changes up to the moment, as transfer/runs/point_in_time.py plans and replays
them. A dry run plans only: which segments, and the exact commit it would end at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.application import Snapledger
from domain.restore import Restore
from service.capture import read_segment
from transfer.archive.crypto import Keyring
from transfer.errors import TargetError
from transfer.runs import point_in_time
from transfer.sources.mongodb import capture as oplog_capture
from transfer.sources.postgres import capture as pg_capture
from transfer.storage import Storage


def replay_to_moment(
    app: Snapledger, restore: Restore, storage: Storage, target: Any, keyring: Keyring | None
) -> dict[str, Any]:
    facts = restore.point_in_time or {}
    capture = app.get_capture(facts["capture_id"])
    to_time = datetime.fromisoformat(facts["to_time"]) if "to_time" in facts else None
    kind = getattr(target, "kind", None)
    decode = oplog_capture.read_segment if kind == "mongodb" else pg_capture.read_segment
    plan = point_in_time.plan(
        capture.from_position,
        capture.segments,
        lambda segment: read_segment(storage, segment, keyring, capture_id=str(capture.id), decode=decode),
        to_lsn=facts.get("to_lsn"),
        to_time=to_time,
        checked=(capture.checked_lsn, capture.restorable_until or ""),
    )
    if restore.dry_run:
        return {"planned": plan.as_dict()}
    mapping = {k: v for k, v in restore.mapping.items()}
    if kind == "mongodb":
        snap = app.get_snapshot(capture.snapshot_id)
        databases = list(((snap.point_in_time or {}).get("capture") or {}).get("databases") or [])
        return point_in_time.replay_oplog(target, plan, list(restore.collections), mapping, databases)
    if kind != "postgresql":
        raise TargetError(f"target {restore.target!r} cannot take captured changes")
    return point_in_time.replay(target.url, target.password, plan, mapping)
