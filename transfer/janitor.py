"""The retention janitor: deletes completed snapshots that fall outside their policy's
retention (keep_last N newest, and/or older than expire_after), archive first, then the
SnapshotDeleted event with reason `retention`. It never deletes the newest completed
snapshot of a live policy, and it reads the policy's current retention, so an edit
applies to existing snapshots on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.persistence import IntegrityError

from domain.application import Snapledger
from domain.errors import DomainError
from domain.policy import RETENTION_ACTOR
from transfer.pipeline import remove_archive
from transfer.storage import Storage, StorageError

log = logging.getLogger("snapledger.janitor")


def expired_snapshots(retention: dict[str, Any], completed: list[dict[str, Any]], now: datetime) -> list[str]:
    """completed: rows with id and finished_at, newest first. Answers the ids to delete."""
    keep_last = retention.get("keep_last")
    expire_after = retention.get("expire_after_seconds")
    doomed = []
    for rank, row in enumerate(completed):
        if rank == 0:
            continue  # the newest completed snapshot of a live policy always stays
        too_many = keep_last is not None and rank >= keep_last
        too_old = expire_after is not None and (
            datetime.fromisoformat(row["finished_at"]) + timedelta(seconds=expire_after) < now
        )
        if too_many or too_old:
            doomed.append(row["id"])
    return doomed


class Janitor:
    def __init__(
        self,
        app: Snapledger,
        storages: dict[str, Storage],
        retained: Callable[[], list[tuple[dict[str, Any], list[dict[str, Any]]]]],
    ) -> None:
        self.app = app
        self.storages = storages
        self.retained = retained

    def tick(self, now: datetime) -> list[str]:
        deleted = []
        for retention, completed in self.retained():
            for snapshot_id in expired_snapshots(retention, completed, now):
                if self._delete(snapshot_id):
                    deleted.append(snapshot_id)
        return deleted

    def _delete(self, snapshot_id: str) -> bool:
        try:
            snap = self.app.get_snapshot(snapshot_id)
            if snap.status != "completed":
                return False
            storage = self.storages.get(snap.storage)
            if storage is None:
                log.warning(
                    "retention: storage %r of %s is not configured; kept", snap.storage, snap.sub_name
                )
                return False
            remove_archive(storage, snap.archive_key)
            self.app.delete_snapshot(snap.id, True, RETENTION_ACTOR, reason="retention")
        except (DomainError, IntegrityError, StorageError) as e:
            log.warning("retention: %s not deleted: %s", snapshot_id, e)
            return False
        log.info("retention: deleted %s (%s)", snap.sub_name, snap.archive_key)
        return True
