"""The retention janitor: deletes completed snapshots that fall outside their policy's
retention (keep_last N newest, and/or older than expire_after), archive first, then the
SnapshotDeleted event with reason `retention`. It never deletes the newest completed
snapshot of a live policy, and it reads the policy's current retention, so an edit
applies to existing snapshots on the next pass.

Each pass also sweeps orphans: unfinished writes (a partial local file, an open S3
multipart upload, a restore's partial target file) that no requested or running task owns,
such as a killed worker's upload whose snapshot was then deleted, or an upload that a
retried CreateMultipartUpload left behind when its first answer was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import IntegrityError

from domain.application import Snapledger
from domain.errors import DomainError
from domain.policy import RETENTION_ACTOR
from domain.run import HAS_ARCHIVE
from service.window import remove_segments
from transfer.errors import TargetError
from transfer.ports import Target
from transfer.runs.backup import remove_archive
from transfer.storage import Storage, StorageError
from transfer.storage.base import Partial

log = logging.getLogger("snapledger.janitor")
# Writes younger than this are never swept, owned or not: a margin for writers the
# in-flight list cannot know about yet. Ownership, not age, is what protects live runs.
ORPHAN_GRACE_SECONDS = 900


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
        in_flight: Callable[[], list[dict[str, Any]]] | None = None,
        targets: dict[str, Target] | None = None,
        orphan_grace_seconds: float = ORPHAN_GRACE_SECONDS,
    ) -> None:
        self.app = app
        self.storages = storages
        self.retained = retained
        self.in_flight = in_flight  # task-queue rows (kind, id, target); None: no sweep
        self.targets = targets or {}
        self.orphan_grace = timedelta(seconds=orphan_grace_seconds)

    def plan(self, now: datetime) -> list[str]:
        """The snapshots a pass at `now` would delete, oldest rule first; nothing changes."""
        return [
            snapshot_id
            for retention, completed in self.retained()
            for snapshot_id in expired_snapshots(retention, completed, now)
        ]

    def tick(self, now: datetime) -> list[str]:
        self.sweep(now)
        return self.delete(self.plan(now))

    def delete(self, snapshot_ids: list[str]) -> list[str]:
        """Deletes planned snapshots, archive first; answers the ids it deleted."""
        return [snapshot_id for snapshot_id in snapshot_ids if self._delete(snapshot_id)]

    def sweep(self, now: datetime) -> int:
        """Removes unfinished writes that no requested or running task owns and that are
        older than the grace; answers how many. Writes are listed before the tasks are
        read, so a write that starts meanwhile belongs to a task the list already holds."""
        if self.in_flight is None:
            return 0
        found: dict[str, list[Any]] = {}
        for name, storage in self.storages.items():
            try:
                found[name] = storage.list_partials()
            except StorageError as e:
                log.warning("orphan sweep: cannot list unfinished writes in %s: %s", name, e)
        target_partials: dict[str, list[Partial]] = {}
        for name, target in self.targets.items():
            try:
                target_partials[name] = target.list_partials()
            except (OSError, TargetError) as e:
                log.warning("orphan sweep: cannot list unfinished writes of target %s: %s", name, e)
        owned: dict[str, list[str]] = {}
        busy_targets = set()
        for row in self.in_flight():
            if row["kind"] == "restore":
                busy_targets.add(row["target"])
                continue
            try:
                snap = self.app.get_snapshot(row["id"])
            except DomainError:
                continue
            owned.setdefault(snap.storage, []).append(snap.archive_key)
        oldest = now - self.orphan_grace
        removed = 0
        for name, partials in found.items():
            keys = owned.get(name, [])
            for partial in partials:
                if partial.started > oldest or any(partial.key.startswith(k) for k in keys):
                    continue
                try:
                    self.storages[name].remove_partial(partial)
                except StorageError as e:
                    log.warning("orphan sweep: %s in %s kept: %s", partial.key, name, e)
                    continue
                log.info("orphan sweep: removed an unfinished write of %s in %s", partial.key, name)
                removed += 1
        for name, listed in target_partials.items():
            if name in busy_targets:
                continue
            for partial in listed:
                if partial.started > oldest:
                    continue
                try:
                    if not self.targets[name].remove_partial(partial):
                        continue  # its restore published or removed it meanwhile
                except (OSError, TargetError) as e:
                    log.warning("orphan sweep: %s of target %s kept: %s", partial.key, name, e)
                    continue
                log.info("orphan sweep: removed %s of restore target %s", partial.key, name)
                removed += 1
        return removed

    def _delete(self, snapshot_id: str) -> bool:
        try:
            snap = self.app.get_snapshot(snapshot_id)
            if snap.status not in HAS_ARCHIVE:
                return False
            snap.check_deletable(datetime.now(UTC))  # object lock: kept until it lapses
            storage = self.storages.get(snap.storage)
            if storage is None:
                log.warning(
                    "retention: storage %r of %s is not configured; kept", snap.storage, snap.sub_name
                )
                return False
            remove_segments(self.app, storage, snap)  # the changes after it go with it
            remove_archive(storage, snap.archive_key)
            self.app.delete_snapshot(snap.id, True, RETENTION_ACTOR, reason="retention")
        except (DomainError, IntegrityError, StorageError) as e:
            log.warning("retention: %s not deleted: %s", snapshot_id, e)
            return False
        log.info("retention: deleted %s (%s)", snap.sub_name, snap.archive_key)
        return True
