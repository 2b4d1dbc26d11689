"""The task queue: requested and running runs, which workers claim."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from projections.rowbuffer import Rows
from projections.views.base import View, _update, iso, oid

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


KINDS = {"SnapshotRequested": "snapshot", "RestoreRequested": "restore", "DrillRequested": "drill"}


@tasks.on(*KINDS)
def _task_requested(rows: Rows, e: Any, position: int) -> None:
    kind = KINDS[type(e).__name__]
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


@tasks.on("SnapshotStarted", "RestoreStarted", "DrillStarted")
def _task_started(rows: Rows, e: Any, position: int) -> None:
    _update(
        rows, "task_queue", oid(e), position,
        status="running", worker=e.worker, lease_seconds=e.lease_seconds,
        lease_expires_at=iso(e.timestamp + timedelta(seconds=e.lease_seconds)),
    )  # fmt: skip


@tasks.on(
    "SnapshotProgressed", "RestoreProgressed", "DrillProgressed", "SnapshotHeartbeat", "RestoreHeartbeat",
    "DrillHeartbeat",
)  # fmt: skip
def _task_renewed(rows: Rows, e: Any, position: int) -> None:
    row = rows.get("task_queue", oid(e))
    if row is not None and row["lease_seconds"] is not None:
        expires = e.timestamp + timedelta(seconds=int(row["lease_seconds"]))
        _update(rows, "task_queue", oid(e), position, lease_expires_at=iso(expires))


@tasks.on("SnapshotStopRequested", "RestoreStopRequested", "DrillStopRequested")
def _task_stop_requested(rows: Rows, e: Any, position: int) -> None:
    _update(rows, "task_queue", oid(e), position, stop_requested=1)


tasks.starts = frozenset(KINDS)


tasks.ends = frozenset({
    "SnapshotCompleted", "SnapshotPartiallyFailed", "SnapshotFailed", "SnapshotStopped", "SnapshotDeleted",
    "RestoreCompleted", "RestoreFailed", "RestoreStopped", "DrillPassed", "DrillFailed", "DrillStopped",
})  # fmt: skip


@tasks.on(*sorted(tasks.ends))
def _task_done(rows: Rows, e: Any, position: int) -> None:
    rows.delete("task_queue", oid(e))
