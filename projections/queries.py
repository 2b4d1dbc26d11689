"""The read side's questions that the worker, the scheduler, the janitor and the catalog
sync ask of the record views, each named for the question it answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from projections.db import ViewDatabase
from projections.views import iso
from projections.views.base import ARCHIVED_SQL


def due_runs(db: ViewDatabase, now: datetime) -> list[tuple[str, UUID]]:
    """Runs to claim, oldest first: requested ones, and running ones whose lease lapsed
    (their worker died or froze)."""
    rows = db.query(
        "SELECT kind, id FROM task_queue WHERE (status = 'requested' AND stop_requested = 0) "
        "OR (status = 'running' AND lease_expires_at < %(now)s) ORDER BY created_at LIMIT 50",
        {"now": iso(now)},
    )
    return [(r["kind"], UUID(r["id"])) for r in rows]


def runs_in_flight(db: ViewDatabase) -> list[dict[str, Any]]:
    """Every requested or running task (the janitor leaves their unfinished writes be)."""
    return db.query("SELECT kind, id, target FROM task_queue")


def policies_due(db: ViewDatabase, now: datetime) -> list[dict[str, Any]]:
    """Active scheduled policies whose next slot has come."""
    return db.query(
        "SELECT id, schedule, timezone FROM policies WHERE status = 'active' AND schedule IS NOT NULL "
        "AND next_run_at IS NOT NULL AND next_run_at <= %(now)s",
        {"now": iso(now)},
    )


def drills_due(db: ViewDatabase, now: datetime) -> list[dict[str, Any]]:
    """Active policies whose drill schedule's next slot has come."""
    return db.query(
        "SELECT id, drill, timezone FROM policies WHERE status = 'active' AND next_drill_at IS NOT NULL "
        "AND next_drill_at <= %(now)s",
        {"now": iso(now)},
    )


def retained_snapshots(db: ViewDatabase) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Live policies with a retention rule, each with its completed snapshots, newest first."""
    out = []
    for policy in db.query("SELECT id, retention FROM policies WHERE status != 'deleted'"):
        retention = json.loads(policy["retention"])
        if retention.get("keep_last") is None and retention.get("expire_after_seconds") is None:
            continue
        completed = db.query(
            "SELECT id, finished_at FROM backup_records WHERE policy_id = %(p)s "
            f"AND status IN {ARCHIVED_SQL} ORDER BY finished_at DESC, id DESC",
            {"p": policy["id"]},
        )
        out.append((retention, completed))
    return out


def archives_written_to(db: ViewDatabase, storage: str) -> frozenset[str]:
    """Archive keys this installation's own snapshots wrote to a location (not imports)."""
    rows = db.query(
        "SELECT archive_key FROM backup_records WHERE storage = %(s)s AND trigger != 'import'", {"s": storage}
    )
    return frozenset(r["archive_key"] for r in rows)


def live_policy_named(db: ViewDatabase, name: str) -> str | None:
    """The id of the live policy of that name, compared as the name claims compare names
    (case-insensitively)."""
    rows = db.query(
        "SELECT id FROM policies WHERE status != 'deleted' AND lower(name) = %(n)s", {"n": name.lower()}
    )
    return str(rows[0]["id"]) if rows else None


def snapshot_by_task_name(db: ViewDatabase, sub_name: str) -> str | None:
    """The id of the newest live snapshot with that task name (as the tables show it, nightly#3)."""
    rows = db.query(
        "SELECT id FROM backup_records WHERE sub_name = %(s)s AND status != 'deleted' "
        "ORDER BY created_at DESC LIMIT 1",
        {"s": sub_name},
    )
    return str(rows[0]["id"]) if rows else None


def restore_by_task_name(db: ViewDatabase, sub_name: str) -> str | None:
    """The id of the newest restore with that task name (nightly#3->scratch)."""
    rows = db.query(
        "SELECT id FROM restore_records WHERE sub_name = %(s)s ORDER BY created_at DESC LIMIT 1",
        {"s": sub_name},
    )
    return str(rows[0]["id"]) if rows else None


def capture_windows(db: ViewDatabase) -> list[dict[str, Any]]:
    """Each policy that has had continuous capture, with its completed snapshots that
    opened a capture window (point_in_time.capture), newest first."""
    out = []
    # The capture loop asks every tick: policies with capture on, and those whose capture
    # started once (capture_windows is small), not a scan of every Backup Record.
    policies = db.query(
        "SELECT id, name, source, storage, status, continuous FROM policies WHERE continuous IS NOT NULL "
        "OR id IN (SELECT policy_id FROM capture_windows)"
    )
    for policy in policies:
        rows = db.query(
            "SELECT id, point_in_time, status FROM backup_records WHERE policy_id = %(p)s "
            "AND point_in_time LIKE %(capture)s ORDER BY sequence DESC",
            {"p": policy["id"], "capture": '%"capture"%'},
        )
        windows = []
        for row in rows:
            moment = json.loads(row["point_in_time"] or "{}")
            if "capture" in moment:
                windows.append({"snapshot_id": row["id"], "status": row["status"], **moment["capture"]})
        if windows or policy["continuous"]:
            out.append(
                {**policy, "continuous": json.loads(policy["continuous"] or "null"), "windows": windows}
            )
    return out
