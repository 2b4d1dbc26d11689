"""The record views: how each event changes Policies, Backup Records and Restore Records.

Handlers change rows by key through `Rows` (projections/rowbuffer.py), which merges a
batch's changes per row and writes them once; each insert is idempotent (ON CONFLICT), so
replaying a batch that a concurrent runner already applied leaves the same rows.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from domain.schedule import next_slot
from projections.rowbuffer import Rows

Handler = Callable[[Rows, Any, int], None]


def iso(value: datetime | None) -> str | None:
    return _iso(value) if value else None


# Several views format the same event's id and time: a replay spends whole percents on it.
@functools.lru_cache(maxsize=1024)
def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=1024)
def _text(value: UUID) -> str:
    return str(value)


def oid(e: Any) -> str:
    """The event's aggregate id as the views store it."""
    return _text(e.originator_id)


def failure_reason(e: Any) -> str:
    """A failed run's reason, or the collections a partially failed one left out."""
    failed = getattr(e, "failed_collections", None)
    if failed:
        return "collections failed: " + "; ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
    reason: str = e.reason
    return reason


_ENCODER = json.JSONEncoder(sort_keys=True, default=str)  # json.dumps builds one per call


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


@dataclass
class View:
    """A named read model: its tables, and one handler per event type it follows."""

    name: str
    table: str
    ddl: list[str]
    version: int = 1  # bump when ddl changes: the runner rebuilds the view from events
    # Its share of a replay's handler and write work on a typical log (measured on the
    # bench's mix: backups alone costs as much as the three others), to split a rebuild.
    cost: int = 1
    # A view that deletes an aggregate's row for good on one of `ends` (never to write it
    # again) and creates it on one of `starts`: a batch may skip what such a row's last
    # moments change (see projections.runner.voided).
    starts: frozenset[str] = frozenset()
    ends: frozenset[str] = frozenset()
    extra_tables: list[str] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        return [self.table, *self.extra_tables]

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for t in event_types:
                self.handlers[t] = fn
            return fn

        return register


def _update(rows: Rows, table: str, row_id: str, position: int, **values: Any) -> None:
    values["position"] = position
    rows.update(table, row_id, values)


# --------------------------------------------------------------------- Policies
policies = View(
    name="policies",
    table="policies",
    version=2,
    cost=2,
    extra_tables=["policy_snapshots"],
    ddl=[
        """CREATE TABLE IF NOT EXISTS policies (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, source TEXT NOT NULL,
            storage TEXT NOT NULL, schedule TEXT, timezone TEXT NOT NULL, retention TEXT NOT NULL,
            collections TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, created_by TEXT, snapshots_count BIGINT NOT NULL,
            last_snapshot_id TEXT, rebuilds BIGINT NOT NULL, last_slot TEXT, next_run_at TEXT,
            last_success_at TEXT, last_failure_at TEXT, last_failure_reason TEXT,
            position BIGINT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS policies_created ON policies (created_at, id)",
        # Which policy a snapshot belongs to, so snapshot outcomes reach the policy row.
        """CREATE TABLE IF NOT EXISTS policy_snapshots (
            snapshot_id TEXT PRIMARY KEY, policy_id TEXT NOT NULL)""",
    ],
)


def _next_run(rows: Rows, policy_id: str, after: datetime) -> None:
    """next_run_at follows from the events alone, so a rebuilt view computes the same."""
    row = rows.get("policies", policy_id)
    if row is None:
        return
    value = None
    if row["schedule"] and row["status"] == "active":
        last = datetime.fromisoformat(row["last_slot"]) if row["last_slot"] else None
        try:
            value = iso(next_slot(row["schedule"], row["timezone"], max(after, last) if last else after))
        except (ValueError, KeyError):  # a schedule that never fires, or an unknown zone
            value = None
    rows.update("policies", policy_id, {"next_run_at": value})


@policies.on("PolicyCreated")
def _policy_created(rows: Rows, e: Any, position: int) -> None:
    rows.insert(
        "policies",
        {
            "id": oid(e),
            "name": e.name,
            "source": e.source,
            "storage": e.storage,
            "schedule": e.schedule,
            "timezone": e.timezone,
            "retention": dumps(e.retention),
            "collections": dumps(e.collections),
            "status": "active",
            "created_at": iso(e.timestamp),
            "updated_at": iso(e.timestamp),
            "created_by": e.actor,
            "snapshots_count": 0,
            "last_snapshot_id": None,
            "rebuilds": 0,
            "last_slot": None,
            "next_run_at": None,
            "last_success_at": None,
            "last_failure_at": None,
            "last_failure_reason": None,
            "position": position,
        },
        new=True,
    )
    _next_run(rows, oid(e), e.timestamp)


@policies.on("PolicyEdited")
def _policy_edited(rows: Rows, e: Any, position: int) -> None:
    values = {
        k: dumps(v["new"]) if k in ("retention", "collections") else v["new"] for k, v in e.changes.items()
    }
    _update(rows, "policies", oid(e), position, updated_at=iso(e.timestamp), **values)
    _next_run(rows, oid(e), e.timestamp)


def _policy_status(status: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        pid = oid(e)
        _update(rows, "policies", pid, position, status=status, updated_at=iso(e.timestamp))
        _next_run(rows, pid, e.timestamp)

    return handler


policies.on("PolicyStopped")(_policy_status("stopped"))
policies.on("PolicyResumed")(_policy_status("active"))
policies.on("PolicyDeleted")(_policy_status("deleted"))


@policies.on("PolicyRebuilt")
def _policy_rebuilt(rows: Rows, e: Any, position: int) -> None:
    """Rebuild resets the policy's error state."""
    pid = oid(e)
    row = rows.get("policies", pid)
    if row is None:
        return
    _update(
        rows, "policies", pid, position, status="active", rebuilds=int(row["rebuilds"]) + 1,
        last_failure_at=None, last_failure_reason=None, updated_at=iso(e.timestamp),
    )  # fmt: skip
    _next_run(rows, pid, e.timestamp)


@policies.on("SnapshotTaken")
def _snapshot_taken(rows: Rows, e: Any, position: int) -> None:
    pid = oid(e)
    values: dict[str, Any] = {
        "snapshots_count": e.sequence,
        "last_snapshot_id": str(e.snapshot_id),
        "updated_at": iso(e.timestamp),
    }
    if e.slot is not None:
        values["last_slot"] = iso(e.slot)
    _update(rows, "policies", pid, position, **values)
    rows.insert("policy_snapshots", {"snapshot_id": str(e.snapshot_id), "policy_id": pid}, new=True)
    _next_run(rows, pid, e.timestamp)


def _snapshot_outcome(success: bool) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        row = rows.get("policy_snapshots", oid(e))
        if row is None:
            return
        if success:
            values = {"last_success_at": iso(e.timestamp)}
        else:
            values = {"last_failure_at": iso(e.timestamp), "last_failure_reason": failure_reason(e)}
        _update(rows, "policies", row["policy_id"], position, **values)

    return handler


policies.on("SnapshotCompleted", "SnapshotImported")(_snapshot_outcome(True))
policies.on("SnapshotFailed", "SnapshotPartiallyFailed")(_snapshot_outcome(False))


# --------------------------------------------------------------- Backup Records
backups = View(
    name="backups",
    table="backup_records",
    version=4,
    cost=4,
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
            failed_collections TEXT, verification TEXT)""",
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
            **_new_run(e, position),
        },
        new=True,
    )


def _new_run(e: Any, position: int) -> dict[str, Any]:
    """The columns a requested run starts with, the same in Backup and Restore Records."""
    return {
        "task_name": None,
        "worker": None,
        "attempt": 0,
        "requested_by": e.actor,
        "status": "requested",
        "stop_requested": 0,
        "error": None,
        "items": 0,
        "transferred_bytes": 0,
        "progress": 0.0,
        "current_collection": None,
        "elapsed_seconds": None,
        "created_at": iso(e.timestamp),
        "started_at": None,
        "finished_at": None,
        "collections": None,
        "position": position,
    }


def _run_started(table: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        _update(
            rows,
            table,
            oid(e),
            position,
            status="running",
            worker=e.worker,
            task_name=e.task_name,
            attempt=e.attempt,
            started_at=iso(e.timestamp),
            items=0,
            transferred_bytes=0,
            progress=0.0,
            elapsed_seconds=0.0,
            error=None,
        )

    return handler


def _run_progressed(table: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        _update(
            rows, table, oid(e), position, items=e.items, transferred_bytes=e.bytes,
            progress=e.percent, current_collection=e.collection, elapsed_seconds=e.elapsed_seconds,
        )  # fmt: skip

    return handler


def _run_finished(table: str, status: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        values: dict[str, Any] = {
            "status": status,
            "finished_at": iso(e.timestamp),
            "elapsed_seconds": e.elapsed_seconds,
            "items": e.items,
            "transferred_bytes": e.bytes,
            "current_collection": None,
        }
        if status == "completed":
            values["progress"] = 100.0
            values["collections"] = dumps(e.collections)
        if status == "failed":
            values["error"] = e.reason
        _update(rows, table, oid(e), position, **values)

    return handler


def _stop_requested(table: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        _update(rows, table, oid(e), position, stop_requested=1)

    return handler


def _stopped(table: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        _update(
            rows,
            table,
            oid(e),
            position,
            status="stopped",
            finished_at=iso(e.timestamp),
            elapsed_seconds=e.elapsed_seconds,
            items=e.items,
            transferred_bytes=e.bytes,
            progress=e.percent,
            current_collection=None,
        )

    return handler


_backup_completed = _run_finished("backup_records", "completed")
backups.on("SnapshotStarted")(_run_started("backup_records"))
backups.on("SnapshotProgressed")(_run_progressed("backup_records"))
backups.on("SnapshotFailed")(_run_finished("backup_records", "failed"))
backups.on("SnapshotStopRequested")(_stop_requested("backup_records"))
backups.on("SnapshotStopped")(_stopped("backup_records"))


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
        "SELECT id, finished_at FROM backup_records WHERE policy_id = %(p)s "
        "AND status IN ('completed', 'partially_failed')",
        {"p": oid(e)},
    )
    for row in rows.fetchall():
        expires = None
        if seconds and row["finished_at"]:
            expires = iso(datetime.fromisoformat(row["finished_at"]) + timedelta(seconds=seconds))
        rows.update("backup_records", row["id"], {"expires_at": expires})


# -------------------------------------------------------------- Restore Records
restores = View(
    name="restores",
    table="restore_records",
    version=3,
    ddl=[
        """CREATE TABLE IF NOT EXISTS restore_records (
            id TEXT PRIMARY KEY, snapshot_id TEXT NOT NULL, policy_id TEXT NOT NULL,
            sub_name TEXT NOT NULL, target TEXT NOT NULL, storage TEXT NOT NULL,
            archive_key TEXT NOT NULL, requested_collections TEXT NOT NULL, task_name TEXT,
            worker TEXT, attempt BIGINT NOT NULL, requested_by TEXT, status TEXT NOT NULL,
            stop_requested BIGINT NOT NULL, error TEXT, items BIGINT NOT NULL,
            transferred_bytes BIGINT NOT NULL, progress DOUBLE PRECISION NOT NULL,
            current_collection TEXT, elapsed_seconds DOUBLE PRECISION,
            created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, collections TEXT,
            position BIGINT NOT NULL, options TEXT NOT NULL, dry_run BIGINT NOT NULL,
            schema_notes TEXT)""",
        "CREATE INDEX IF NOT EXISTS restore_records_created ON restore_records (created_at, id)",
        "CREATE INDEX IF NOT EXISTS restore_records_status ON restore_records (status)",
    ],
)


@restores.on("RestoreRequested")
def _restore_requested(rows: Rows, e: Any, position: int) -> None:
    rows.insert(
        "restore_records",
        {
            "id": oid(e),
            "snapshot_id": str(e.snapshot_id),
            "policy_id": str(e.policy_id),
            "sub_name": e.sub_name,
            "target": e.target,
            "storage": e.storage,
            "archive_key": e.archive_key,
            "requested_collections": dumps(e.collections),
            **_new_run(e, position),
            "options": dumps({"mapping": e.mapping, "existing": e.existing, "keep_owners": e.keep_owners}),
            "dry_run": int(e.dry_run),
        },
        new=True,
    )


restores.on("RestoreStarted")(_run_started("restore_records"))
restores.on("RestoreProgressed")(_run_progressed("restore_records"))
_restore_completed = _run_finished("restore_records", "completed")


@restores.on("RestoreCompleted")
def _restore_done(rows: Rows, e: Any, position: int) -> None:
    _restore_completed(rows, e, position)
    if e.schema is not None:
        _update(rows, "restore_records", oid(e), position, schema_notes=dumps(e.schema))


restores.on("RestoreFailed")(_run_finished("restore_records", "failed"))
restores.on("RestoreStopRequested")(_stop_requested("restore_records"))
restores.on("RestoreStopped")(_stopped("restore_records"))

# ------------------------------------------------------------------ Task queue
tasks = View(
    name="tasks",
    table="task_queue",
    cost=2,
    ddl=[
        """CREATE TABLE IF NOT EXISTS task_queue (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, policy_id TEXT NOT NULL, target TEXT,
            status TEXT NOT NULL, stop_requested BIGINT NOT NULL, worker TEXT,
            lease_seconds BIGINT, lease_expires_at TEXT, created_at TEXT NOT NULL,
            position BIGINT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS task_queue_due ON task_queue (status, lease_expires_at)",
    ],
)


@tasks.on("SnapshotRequested", "RestoreRequested")
def _task_requested(rows: Rows, e: Any, position: int) -> None:
    kind = "snapshot" if type(e).__name__ == "SnapshotRequested" else "restore"
    if getattr(e, "trigger", None) == "import":
        return  # an imported archive is a record, never work for a worker
    rows.insert(
        "task_queue",
        {
            "id": oid(e),
            "kind": kind,
            "policy_id": str(e.policy_id),
            "target": getattr(e, "target", None),
            "status": "requested",
            "stop_requested": 0,
            "worker": None,
            "lease_seconds": None,
            "lease_expires_at": None,
            "created_at": iso(e.timestamp),
            "position": position,
        },
        new=True,
    )


@tasks.on("SnapshotStarted", "RestoreStarted")
def _task_started(rows: Rows, e: Any, position: int) -> None:
    _update(
        rows, "task_queue", oid(e), position,
        status="running", worker=e.worker, lease_seconds=e.lease_seconds,
        lease_expires_at=iso(e.timestamp + timedelta(seconds=e.lease_seconds)),
    )  # fmt: skip


@tasks.on("SnapshotProgressed", "RestoreProgressed", "SnapshotHeartbeat", "RestoreHeartbeat")
def _task_renewed(rows: Rows, e: Any, position: int) -> None:
    row = rows.get("task_queue", oid(e))
    if row is not None and row["lease_seconds"] is not None:
        expires = e.timestamp + timedelta(seconds=int(row["lease_seconds"]))
        _update(rows, "task_queue", oid(e), position, lease_expires_at=iso(expires))


@tasks.on("SnapshotStopRequested", "RestoreStopRequested")
def _task_stop_requested(rows: Rows, e: Any, position: int) -> None:
    _update(rows, "task_queue", oid(e), position, stop_requested=1)


tasks.starts = frozenset({"SnapshotRequested", "RestoreRequested"})
tasks.ends = frozenset({
    "SnapshotCompleted", "SnapshotPartiallyFailed", "SnapshotFailed", "SnapshotStopped", "SnapshotDeleted",
    "RestoreCompleted", "RestoreFailed", "RestoreStopped",
})  # fmt: skip


@tasks.on(*sorted(tasks.ends))
def _task_done(rows: Rows, e: Any, position: int) -> None:
    rows.delete("task_queue", oid(e))


ALL_VIEWS: dict[str, View] = {v.name: v for v in (policies, backups, restores, tasks)}
