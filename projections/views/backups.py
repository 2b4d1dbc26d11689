"""The Backup Records view: one row per snapshot, from requested to completed or deleted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from projections.rowbuffer import Rows
from projections.views.base import ARCHIVED_SQL, View, _update, dumps, failure_reason, iso, oid
from projections.views.runs import (
    _new_run,
    _run_finished,
    _run_progressed,
    _run_started,
    _stop_requested,
    _stopped,
)

# --------------------------------------------------------------- Backup Records
backups = View(
    name="backups",
    table="backup_records",
    version=6,  # 6: the last drill of each snapshot
    cost=4,
    extra_tables=["snapshot_drills"],
    ddl=[
        """CREATE TABLE IF NOT EXISTS backup_records (
            id TEXT PRIMARY KEY, policy_id TEXT NOT NULL, policy_name TEXT NOT NULL,
            sequence BIGINT NOT NULL, sub_name TEXT NOT NULL, file_name TEXT NOT NULL,
            archive_key TEXT NOT NULL, storage TEXT NOT NULL, source TEXT NOT NULL,
            task_name TEXT, worker TEXT, attempt BIGINT NOT NULL, trigger TEXT NOT NULL,
            requested_by TEXT, status TEXT NOT NULL, stop_requested BIGINT NOT NULL,
            error TEXT, items BIGINT NOT NULL, transferred_bytes BIGINT NOT NULL,
            progress DOUBLE PRECISION NOT NULL, current_collection TEXT,
            elapsed_seconds DOUBLE PRECISION, created_at TEXT NOT NULL, started_at TEXT,
            finished_at TEXT, expires_at TEXT, collections TEXT, sha256 TEXT,
            files_removed BIGINT, position BIGINT NOT NULL, locked_until TEXT,
            failed_collections TEXT, verification TEXT, point_in_time TEXT, last_drill TEXT)""",
        # Which snapshot a drill restored, for its verdict.
        """CREATE TABLE IF NOT EXISTS snapshot_drills (
            drill_id TEXT PRIMARY KEY, snapshot_id TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS backup_records_created ON backup_records (created_at, id)",
        "CREATE INDEX IF NOT EXISTS backup_records_policy ON backup_records (policy_id)",
        "CREATE INDEX IF NOT EXISTS backup_records_status ON backup_records (status)",
    ],
)


@backups.on("SnapshotRequested")
def _snap_requested(rows: Rows, e: Any, position: int) -> None:
    rows.insert(
        "backup_records",
        {
            "id": oid(e),
            "policy_id": str(e.policy_id),
            "policy_name": e.policy_name,
            "sequence": e.sequence,
            "sub_name": e.sub_name,
            "file_name": e.file_name,
            "archive_key": e.archive_key,
            "storage": e.storage,
            "source": e.source,
            "trigger": e.trigger,
            "expires_at": None,
            "sha256": None,
            "files_removed": None,
            "locked_until": None,
            "failed_collections": None,
            "point_in_time": None,
            **_new_run(e, position),
        },
        new=True,
    )


_backup_completed = _run_finished("backup_records", "completed")


@backups.on("SnapshotCompleted")
def _snap_completed(rows: Rows, e: Any, position: int) -> None:
    _backup_completed(rows, e, position)
    _update(
        rows,
        "backup_records",
        oid(e),
        position,
        sha256=e.sha256,
        expires_at=iso(e.expires_at),
        locked_until=iso(e.locked_until),
        point_in_time=dumps(e.point_in_time) if e.point_in_time is not None else None,
    )


@backups.on("SnapshotPartiallyFailed")
def _snap_partially_failed(rows: Rows, e: Any, position: int) -> None:
    _snap_completed(rows, e, position)
    _update(
        rows, "backup_records", oid(e), position,
        status="partially_failed", error=failure_reason(e), failed_collections=dumps(e.failed_collections),
    )  # fmt: skip


@backups.on("SnapshotImported")
def _snap_imported(rows: Rows, e: Any, position: int) -> None:
    """The record shows the original run's times, not the moment of the import."""
    _backup_completed(rows, e, position)
    values: dict[str, Any] = {"finished_at": iso(e.finished_at), "expires_at": iso(e.expires_at)}
    if e.failed_collections:
        values.update(
            status="partially_failed", error=failure_reason(e), failed_collections=dumps(e.failed_collections)
        )
    if e.started_at is not None:
        values.update(started_at=iso(e.started_at), created_at=iso(e.started_at))
    values["verification"] = e.verification
    values["point_in_time"] = dumps(e.point_in_time) if e.point_in_time is not None else None
    _update(rows, "backup_records", oid(e), position, **values)


@backups.on("SnapshotDeleted")
def _snap_deleted(rows: Rows, e: Any, position: int) -> None:
    _update(
        rows,
        "backup_records",
        oid(e),
        position,
        status="deleted",
        files_removed=int(e.files_removed),
        current_collection=None,
    )


@backups.on("PolicyEdited")
def _retention_edited(rows: Rows, e: Any, position: int) -> None:
    """A retention edit moves the expiry of the policy's existing snapshots too (set-based:
    `execute` writes the batch's buffered rows first)."""
    if "retention" not in e.changes:
        return
    seconds = (e.changes["retention"]["new"] or {}).get("expire_after_seconds")
    rows.execute(
        f"SELECT id, finished_at FROM backup_records WHERE policy_id = %(p)s AND status IN {ARCHIVED_SQL}",
        {"p": oid(e)},
    )
    for row in rows.fetchall():
        expires = None
        if seconds and row["finished_at"]:
            expires = iso(datetime.fromisoformat(row["finished_at"]) + timedelta(seconds=seconds))
        rows.update("backup_records", row["id"], {"expires_at": expires})


# The run's own events, as every run's record takes them (runs.py).
backups.on("SnapshotStarted")(_run_started("backup_records"))
backups.on("SnapshotProgressed")(_run_progressed("backup_records"))
backups.on("SnapshotFailed")(_run_finished("backup_records", "failed"))
backups.on("SnapshotStopRequested")(_stop_requested("backup_records"))
backups.on("SnapshotStopped")(_stopped("backup_records"))


# -------------------------------------------------------------------- drills
@backups.on("DrillRequested")
def _drill_requested(rows: Rows, e: Any, position: int) -> None:
    rows.insert("snapshot_drills", {"drill_id": oid(e), "snapshot_id": str(e.snapshot_id)}, new=True)


def _drill_verdict(rows: Rows, e: Any, position: int, status: str, **facts: Any) -> None:
    """A snapshot a drill restored is marked with the verdict: proven restorable, or not."""
    link = rows.get("snapshot_drills", oid(e))
    if link is None or rows.get("backup_records", link["snapshot_id"]) is None:
        return
    verdict = {"drill_id": oid(e), "status": status, "at": iso(e.timestamp), **facts}
    _update(rows, "backup_records", link["snapshot_id"], position, last_drill=dumps(verdict))


@backups.on("DrillPassed")
def _drill_passed(rows: Rows, e: Any, position: int) -> None:
    _drill_verdict(rows, e, position, "passed", rto_seconds=e.rto_seconds, reason=None)


@backups.on("DrillFailed")
def _drill_failed(rows: Rows, e: Any, position: int) -> None:
    _drill_verdict(rows, e, position, "failed", rto_seconds=None, reason=failure_reason(e))
