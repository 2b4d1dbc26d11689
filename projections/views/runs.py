"""How a run's events (started, progressed, failed, stopped) change its record: shared by
Backup Records and Restore Records."""

from __future__ import annotations

from typing import Any

from projections.rowbuffer import Rows
from projections.views.base import Handler, _update, dumps, iso, oid


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
