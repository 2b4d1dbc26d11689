"""The Restore Records view: one row per restore, with its consistency check."""

from __future__ import annotations

from typing import Any

from projections.rowbuffer import Rows
from projections.views.base import View, _update, dumps, oid
from projections.views.runs import (
    _new_run,
    _run_finished,
    _run_progressed,
    _run_started,
    _stop_requested,
    _stopped,
)

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
            "options": dumps(
                {
                    "mapping": e.mapping,
                    "existing": e.existing,
                    "keep_owners": e.keep_owners,
                    "validate": e.validate,
                }
            ),
            "dry_run": int(e.dry_run),
        },
        new=True,
    )


_restore_completed = _run_finished("restore_records", "completed")


@restores.on("RestoreCompleted")
def _restore_done(rows: Rows, e: Any, position: int) -> None:
    _restore_completed(rows, e, position)
    if e.schema is not None:
        _update(rows, "restore_records", oid(e), position, schema_notes=dumps(e.schema))


# The run's own events, as every run's record takes them (runs.py).
restores.on("RestoreStarted")(_run_started("restore_records"))
restores.on("RestoreProgressed")(_run_progressed("restore_records"))
restores.on("RestoreFailed")(_run_finished("restore_records", "failed"))
restores.on("RestoreStopRequested")(_stop_requested("restore_records"))
restores.on("RestoreStopped")(_stopped("restore_records"))
