"""The record views: how each event changes Policies, Backup Records and Restore Records.

Every handler is an idempotent upsert keyed by aggregate id, so replaying a batch that a
concurrent runner already applied leaves the same rows.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain.schedule import next_slot
from projections.db import Cursor

Handler = Callable[[Cursor, Any, int], None]


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value else None


def failure_reason(e: Any) -> str:
    """A failed run's reason, or the collections a partially failed one left out."""
    failed = getattr(e, "failed_collections", None)
    if failed:
        return "collections failed: " + "; ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
    return e.reason


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class View:
    """A named read model: its tables, and one handler per event type it follows."""

    name: str
    table: str
    ddl: list[str]
    version: int = 1  # bump when ddl changes: the runner rebuilds the view from events
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

    def apply(self, cur: Cursor, event: Any, position: int) -> None:
        handler = self.handlers.get(type(event).__name__)
        if handler is not None:
            handler(cur, event, position)


@functools.lru_cache(maxsize=256)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{k} = %({k})s" for k in columns)
    return f"UPDATE {table} SET {sets}, position = %(position)s WHERE id = %(id)s"


def _update(cur: Cursor, table: str, row_id: str, position: int, **values: Any) -> None:
    values["id"], values["position"] = row_id, position
    cur.execute(_update_sql(table, tuple(values)[:-2]), values)


# --------------------------------------------------------------------- Policies
policies = View(
    name="policies",
    table="policies",
    version=2,
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


def _next_run(cur: Cursor, policy_id: str, after: datetime) -> None:
    """next_run_at follows from the events alone, so a rebuilt view computes the same."""
    cur.execute(
        "SELECT schedule, timezone, status, last_slot FROM policies WHERE id = %(id)s", {"id": policy_id}
    )
    row = cur.fetchone()
    if row is None:
        return
    value = None
    if row["schedule"] and row["status"] == "active":
        last = datetime.fromisoformat(row["last_slot"]) if row["last_slot"] else None
        try:
            value = iso(next_slot(row["schedule"], row["timezone"], max(after, last) if last else after))
        except (ValueError, KeyError):  # a schedule that never fires, or an unknown zone
            value = None
    cur.execute("UPDATE policies SET next_run_at = %(v)s WHERE id = %(id)s", {"v": value, "id": policy_id})


@policies.on("PolicyCreated")
def _policy_created(cur: Cursor, e: Any, position: int) -> None:
    cur.execute(
        """INSERT INTO policies VALUES (%(id)s, %(name)s, %(source)s, %(storage)s,
            %(schedule)s, %(timezone)s, %(retention)s, %(collections)s, 'active', %(ts)s, %(ts)s,
            %(actor)s, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL, %(position)s)
        ON CONFLICT (id) DO NOTHING""",
        {
            "id": str(e.originator_id),
            "name": e.name,
            "source": e.source,
            "storage": e.storage,
            "schedule": e.schedule,
            "timezone": e.timezone,
            "retention": dumps(e.retention),
            "collections": dumps(e.collections),
            "ts": iso(e.timestamp),
            "actor": e.actor,
            "position": position,
        },
    )
    _next_run(cur, str(e.originator_id), e.timestamp)


@policies.on("PolicyEdited")
def _policy_edited(cur: Cursor, e: Any, position: int) -> None:
    values = {
        k: dumps(v["new"]) if k in ("retention", "collections") else v["new"] for k, v in e.changes.items()
    }
    _update(cur, "policies", str(e.originator_id), position, updated_at=iso(e.timestamp), **values)
    _next_run(cur, str(e.originator_id), e.timestamp)


def _policy_status(status: str) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
        pid = str(e.originator_id)
        _update(cur, "policies", pid, position, status=status, updated_at=iso(e.timestamp))
        _next_run(cur, pid, e.timestamp)

    return handler


policies.on("PolicyStopped")(_policy_status("stopped"))
policies.on("PolicyResumed")(_policy_status("active"))
policies.on("PolicyDeleted")(_policy_status("deleted"))


@policies.on("PolicyRebuilt")
def _policy_rebuilt(cur: Cursor, e: Any, position: int) -> None:
    """Rebuild resets the policy's error state."""
    cur.execute(
        """UPDATE policies SET status = 'active', rebuilds = rebuilds + 1, last_failure_at = NULL,
           last_failure_reason = NULL, updated_at = %(ts)s, position = %(position)s WHERE id = %(id)s""",
        {"ts": iso(e.timestamp), "position": position, "id": str(e.originator_id)},
    )
    _next_run(cur, str(e.originator_id), e.timestamp)


@policies.on("SnapshotTaken")
def _snapshot_taken(cur: Cursor, e: Any, position: int) -> None:
    pid = str(e.originator_id)
    values: dict[str, Any] = {
        "snapshots_count": e.sequence,
        "last_snapshot_id": str(e.snapshot_id),
        "updated_at": iso(e.timestamp),
    }
    if e.slot is not None:
        values["last_slot"] = iso(e.slot)
    _update(cur, "policies", pid, position, **values)
    cur.execute(
        "INSERT INTO policy_snapshots VALUES (%(s)s, %(p)s) ON CONFLICT (snapshot_id) DO NOTHING",
        {"s": str(e.snapshot_id), "p": pid},
    )
    _next_run(cur, pid, e.timestamp)


def _snapshot_outcome(success: bool) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
        cur.execute(
            "SELECT policy_id FROM policy_snapshots WHERE snapshot_id = %(s)s", {"s": str(e.originator_id)}
        )
        row = cur.fetchone()
        if row is None:
            return
        if success:
            values = {"last_success_at": iso(e.timestamp)}
        else:
            values = {"last_failure_at": iso(e.timestamp), "last_failure_reason": failure_reason(e)}
        _update(cur, "policies", row["policy_id"], position, **values)

    return handler


policies.on("SnapshotCompleted", "SnapshotImported")(_snapshot_outcome(True))
policies.on("SnapshotFailed", "SnapshotPartiallyFailed")(_snapshot_outcome(False))


# --------------------------------------------------------------- Backup Records
backups = View(
    name="backups",
    table="backup_records",
    version=3,
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
            failed_collections TEXT)""",
        "CREATE INDEX IF NOT EXISTS backup_records_created ON backup_records (created_at, id)",
        "CREATE INDEX IF NOT EXISTS backup_records_policy ON backup_records (policy_id)",
        "CREATE INDEX IF NOT EXISTS backup_records_status ON backup_records (status)",
    ],
)


@backups.on("SnapshotRequested")
def _snap_requested(cur: Cursor, e: Any, position: int) -> None:
    cur.execute(
        """INSERT INTO backup_records VALUES (%(id)s, %(policy_id)s, %(policy_name)s,
            %(sequence)s, %(sub_name)s, %(file_name)s, %(archive_key)s, %(storage)s,
            %(source)s, NULL, NULL, 0, %(trigger)s, %(actor)s, 'requested', 0, NULL, 0, 0,
            0, NULL, NULL, %(ts)s, NULL, NULL, NULL, NULL, NULL, NULL, %(position)s, NULL, NULL)
        ON CONFLICT (id) DO NOTHING""",
        {
            "id": str(e.originator_id),
            "policy_id": str(e.policy_id),
            "policy_name": e.policy_name,
            "sequence": e.sequence,
            "sub_name": e.sub_name,
            "file_name": e.file_name,
            "archive_key": e.archive_key,
            "storage": e.storage,
            "source": e.source,
            "trigger": e.trigger,
            "actor": e.actor,
            "ts": iso(e.timestamp),
            "position": position,
        },
    )


def _run_started(table: str) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
        _update(
            cur,
            table,
            str(e.originator_id),
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
    def handler(cur: Cursor, e: Any, position: int) -> None:
        cur.execute(
            f"""UPDATE {table} SET items = %(items)s, transferred_bytes = %(bytes)s,
                progress = %(percent)s, current_collection = %(collection)s,
                elapsed_seconds = %(ts_elapsed)s, position = %(position)s
                WHERE id = %(id)s""",
            {
                "items": e.items,
                "bytes": e.bytes,
                "percent": e.percent,
                "collection": e.collection,
                "ts_elapsed": e.elapsed_seconds,
                "position": position,
                "id": str(e.originator_id),
            },
        )

    return handler


def _run_finished(table: str, status: str) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
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
        _update(cur, table, str(e.originator_id), position, **values)

    return handler


def _stop_requested(table: str) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
        _update(cur, table, str(e.originator_id), position, stop_requested=1)

    return handler


def _stopped(table: str) -> Handler:
    def handler(cur: Cursor, e: Any, position: int) -> None:
        _update(
            cur,
            table,
            str(e.originator_id),
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


backups.on("SnapshotStarted")(_run_started("backup_records"))
backups.on("SnapshotProgressed")(_run_progressed("backup_records"))
backups.on("SnapshotFailed")(_run_finished("backup_records", "failed"))
backups.on("SnapshotStopRequested")(_stop_requested("backup_records"))
backups.on("SnapshotStopped")(_stopped("backup_records"))


@backups.on("SnapshotCompleted")
def _snap_completed(cur: Cursor, e: Any, position: int) -> None:
    _run_finished("backup_records", "completed")(cur, e, position)
    _update(
        cur,
        "backup_records",
        str(e.originator_id),
        position,
        sha256=e.sha256,
        expires_at=iso(e.expires_at),
        locked_until=iso(e.locked_until),
    )


@backups.on("SnapshotPartiallyFailed")
def _snap_partially_failed(cur: Cursor, e: Any, position: int) -> None:
    _snap_completed(cur, e, position)
    _update(
        cur, "backup_records", str(e.originator_id), position,
        status="partially_failed", error=failure_reason(e), failed_collections=dumps(e.failed_collections),
    )  # fmt: skip


@backups.on("SnapshotImported")
def _snap_imported(cur: Cursor, e: Any, position: int) -> None:
    """The record shows the original run's times, not the moment of the import."""
    _run_finished("backup_records", "completed")(cur, e, position)
    values: dict[str, Any] = {"finished_at": iso(e.finished_at), "expires_at": iso(e.expires_at)}
    if e.failed_collections:
        values.update(
            status="partially_failed", error=failure_reason(e), failed_collections=dumps(e.failed_collections)
        )
    if e.started_at is not None:
        values.update(started_at=iso(e.started_at), created_at=iso(e.started_at))
    _update(cur, "backup_records", str(e.originator_id), position, **values)


@backups.on("SnapshotDeleted")
def _snap_deleted(cur: Cursor, e: Any, position: int) -> None:
    _update(
        cur,
        "backup_records",
        str(e.originator_id),
        position,
        status="deleted",
        files_removed=int(e.files_removed),
        current_collection=None,
    )


@backups.on("PolicyEdited")
def _retention_edited(cur: Cursor, e: Any, position: int) -> None:
    """A retention edit moves the expiry of the policy's existing snapshots too."""
    if "retention" not in e.changes:
        return
    seconds = (e.changes["retention"]["new"] or {}).get("expire_after_seconds")
    cur.execute(
        "SELECT id, finished_at FROM backup_records WHERE policy_id = %(p)s "
        "AND status IN ('completed', 'partially_failed')",
        {"p": str(e.originator_id)},
    )
    for row in cur.fetchall():
        expires = None
        if seconds and row["finished_at"]:
            expires = iso(datetime.fromisoformat(row["finished_at"]) + timedelta(seconds=seconds))
        cur.execute(
            "UPDATE backup_records SET expires_at = %(x)s WHERE id = %(id)s", {"x": expires, "id": row["id"]}
        )


# -------------------------------------------------------------- Restore Records
restores = View(
    name="restores",
    table="restore_records",
    version=2,
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
            position BIGINT NOT NULL, options TEXT NOT NULL, dry_run BIGINT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS restore_records_created ON restore_records (created_at, id)",
        "CREATE INDEX IF NOT EXISTS restore_records_status ON restore_records (status)",
    ],
)


@restores.on("RestoreRequested")
def _restore_requested(cur: Cursor, e: Any, position: int) -> None:
    cur.execute(
        """INSERT INTO restore_records VALUES (%(id)s, %(snapshot_id)s, %(policy_id)s,
            %(sub_name)s, %(target)s, %(storage)s, %(archive_key)s, %(collections)s, NULL,
            NULL, 0, %(actor)s, 'requested', 0, NULL, 0, 0, 0, NULL, NULL, %(ts)s, NULL,
            NULL, NULL, %(position)s, %(options)s, %(dry_run)s)
        ON CONFLICT (id) DO NOTHING""",
        {
            "id": str(e.originator_id),
            "snapshot_id": str(e.snapshot_id),
            "policy_id": str(e.policy_id),
            "sub_name": e.sub_name,
            "target": e.target,
            "storage": e.storage,
            "archive_key": e.archive_key,
            "collections": dumps(e.collections),
            "actor": e.actor,
            "ts": iso(e.timestamp),
            "position": position,
            "options": dumps({"mapping": e.mapping, "existing": e.existing}),
            "dry_run": int(e.dry_run),
        },
    )


restores.on("RestoreStarted")(_run_started("restore_records"))
restores.on("RestoreProgressed")(_run_progressed("restore_records"))
restores.on("RestoreCompleted")(_run_finished("restore_records", "completed"))
restores.on("RestoreFailed")(_run_finished("restore_records", "failed"))
restores.on("RestoreStopRequested")(_stop_requested("restore_records"))
restores.on("RestoreStopped")(_stopped("restore_records"))

# ------------------------------------------------------------------ Task queue
tasks = View(
    name="tasks",
    table="task_queue",
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
def _task_requested(cur: Cursor, e: Any, position: int) -> None:
    kind = "snapshot" if type(e).__name__ == "SnapshotRequested" else "restore"
    if getattr(e, "trigger", None) == "import":
        return  # an imported archive is a record, never work for a worker
    cur.execute(
        """INSERT INTO task_queue VALUES (%(id)s, %(kind)s, %(policy_id)s, %(target)s, 'requested',
            0, NULL, NULL, NULL, %(ts)s, %(position)s) ON CONFLICT (id) DO NOTHING""",
        {
            "id": str(e.originator_id),
            "kind": kind,
            "policy_id": str(e.policy_id),
            "target": getattr(e, "target", None),
            "ts": iso(e.timestamp),
            "position": position,
        },
    )


@tasks.on("SnapshotStarted", "RestoreStarted")
def _task_started(cur: Cursor, e: Any, position: int) -> None:
    _update(
        cur, "task_queue", str(e.originator_id), position,
        status="running", worker=e.worker, lease_seconds=e.lease_seconds,
        lease_expires_at=iso(e.timestamp + timedelta(seconds=e.lease_seconds)),
    )  # fmt: skip


@tasks.on("SnapshotProgressed", "RestoreProgressed", "SnapshotHeartbeat", "RestoreHeartbeat")
def _task_renewed(cur: Cursor, e: Any, position: int) -> None:
    cur.execute("SELECT lease_seconds FROM task_queue WHERE id = %(id)s", {"id": str(e.originator_id)})
    row = cur.fetchone()
    if row is not None and row["lease_seconds"] is not None:
        expires = e.timestamp + timedelta(seconds=int(row["lease_seconds"]))
        _update(cur, "task_queue", str(e.originator_id), position, lease_expires_at=iso(expires))


@tasks.on("SnapshotStopRequested", "RestoreStopRequested")
def _task_stop_requested(cur: Cursor, e: Any, position: int) -> None:
    _update(cur, "task_queue", str(e.originator_id), position, stop_requested=1)


@tasks.on(
    "SnapshotCompleted", "SnapshotPartiallyFailed", "SnapshotFailed", "SnapshotStopped", "SnapshotDeleted",
    "RestoreCompleted", "RestoreFailed", "RestoreStopped",
)  # fmt: skip
def _task_done(cur: Cursor, e: Any, position: int) -> None:
    cur.execute("DELETE FROM task_queue WHERE id = %(id)s", {"id": str(e.originator_id)})


ALL_VIEWS: dict[str, View] = {v.name: v for v in (policies, backups, restores, tasks)}
