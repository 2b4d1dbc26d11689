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
from transfer.storage import Storage


def replay_to_moment(
    app: Snapledger, restore: Restore, storage: Storage, target: Any, keyring: Keyring | None
) -> dict[str, Any]:
    facts = restore.point_in_time or {}
    capture = app.get_capture(facts["capture_id"])
    to_time = datetime.fromisoformat(facts["to_time"]) if "to_time" in facts else None
    plan = point_in_time.plan(
        capture.from_position,
        capture.segments,
        lambda segment: read_segment(storage, segment, keyring, capture_id=str(capture.id)),
        to_lsn=facts.get("to_lsn"),
        to_time=to_time,
        checked=(capture.checked_lsn, capture.restorable_until or ""),
    )
    if restore.dry_run:
        return {"planned": plan.as_dict()}
    if getattr(target, "kind", None) != "postgresql":
        raise TargetError(f"target {restore.target!r} cannot take PostgreSQL changes")
    mapping = {k: v for k, v in restore.mapping.items()}
    return point_in_time.replay(target.url, target.password, plan, mapping)
