"""Queries over the record views, shaped as the API's rows, with keyset pagination."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from api.params import encode_cursor
from domain.run import HAS_ARCHIVE, RUN_STATUSES
from projections.db import ViewDatabase

BASE = "/api/v1"
ARCHIVED = HAS_ARCHIVE
BACKUP_STATUSES = RUN_STATUSES


def _page(
    db: ViewDatabase,
    table: str,
    filters: dict[str, Any],
    cursor: tuple[str, str] | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """filters: column equalities, plus created_after / created_before (ISO, UTC)."""
    ranges = {k: filters.pop(k) for k in ("created_after", "created_before") if k in filters}
    where = [f"{k} = %({k})s" for k, v in filters.items() if v is not None]
    params = {k: v for k, v in filters.items() if v is not None}
    if ranges.get("created_after"):
        where.append("created_at >= %(created_after)s")
        params["created_after"] = ranges["created_after"]
    if ranges.get("created_before"):
        where.append("created_at < %(created_before)s")
        params["created_before"] = ranges["created_before"]
    if cursor:
        where.append("(created_at < %(c_at)s OR (created_at = %(c_at)s AND id < %(c_id)s))")
        params.update(c_at=cursor[0], c_id=cursor[1])
    sql = f"SELECT * FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, id DESC LIMIT %(lim)s"
    params["lim"] = limit + 1
    rows = db.query(sql, params)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor


def _one(db: ViewDatabase, table: str, row_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {table} WHERE id = %(id)s", {"id": row_id})
    return rows[0] if rows else None


def policy_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "source": r["source"],
        "storage": r["storage"],
        "schedule": r["schedule"],
        "timezone": r["timezone"],
        "next_run_at": r["next_run_at"],
        "last_slot": r["last_slot"],
        "last_success_at": r["last_success_at"],
        "last_failure_at": r["last_failure_at"],
        "last_failure_reason": r["last_failure_reason"],
        "retention": json.loads(r["retention"]),
        "collections": json.loads(r["collections"]),
        "continuous": json.loads(r["continuous"]) if r["continuous"] else None,
        "drill": json.loads(r["drill"]) if r.get("drill") else None,
        # the newest capture window: restorable from, until, and how far behind now it is
        "capture": _window(r),
        "capture_lag_seconds": _lag(r),
        # the newest drill (status, snapshot, RTO) and when a drill last proved a restore
        "last_drill": json.loads(r["last_drill"]) if r.get("last_drill") else None,
        "verified_restorable_at": r.get("verified_restorable_at"),
        "next_drill_at": r.get("next_drill_at"),
        "status": r["status"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
        "created_by": r["created_by"],
        "snapshots_count": r["snapshots_count"],
        "last_snapshot_id": r["last_snapshot_id"],
        "rebuilds": r["rebuilds"],
        "events_url": f"{BASE}/events?policy_id={r['id']}",  # answers once the policy is deleted too
        "position": r["position"],
    }


def pace(r: dict[str, Any]) -> dict[str, Any]:
    """Rate over the whole run so far, and the time left at that rate, for running rows.

    Both come from the last progress event (elapsed, items, bytes, percent), so every
    reader of the view computes the same figures."""
    elapsed = r["elapsed_seconds"] or 0.0
    if r["status"] != "running" or elapsed <= 0:
        return {"items_per_second": None, "bytes_per_second": None, "eta_seconds": None}
    progress = r["progress"] or 0.0
    eta = round(elapsed * (100.0 - progress) / progress, 1) if 0 < progress < 100 else None
    return {
        "items_per_second": round(r["items"] / elapsed, 1),
        "bytes_per_second": round(r["transferred_bytes"] / elapsed, 1),
        "eta_seconds": eta,
    }


def _window(r: dict[str, Any]) -> dict[str, Any] | None:
    return json.loads(r["capture"]) if r.get("capture") else None


def _lag(r: dict[str, Any]) -> float | None:
    window = _window(r)
    if not window or window["status"] != "capturing" or not window.get("restorable_until"):
        return None
    behind = datetime.now(UTC) - datetime.fromisoformat(window["restorable_until"])
    return round(max(0.0, behind.total_seconds()), 1)


def backup_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **pace(r),
        "id": r["id"],
        "policy_id": r["policy_id"],
        "policy_name": r["policy_name"],
        "sub_name": r["sub_name"],
        "file_name": r["file_name"],
        "download_url": f"{BASE}/backups/{r['id']}/download" if r["status"] in ARCHIVED else None,
        "task_name": r["task_name"],
        "log_url": f"{BASE}/events?task_id={r['id']}",  # answers once the snapshot is deleted too
        # the verdict of the last drill that restored this snapshot: proven restorable, or not
        "last_drill": json.loads(r["last_drill"]) if r.get("last_drill") else None,
        "elapsed_seconds": r["elapsed_seconds"],
        "items": r["items"],
        "progress": r["progress"],
        "created_at": r["created_at"],
        "started_at": r["started_at"],
        "finished_at": r["finished_at"],
        "expires_at": r["expires_at"],
        "transferred_bytes": r["transferred_bytes"],
        "status": r["status"],
        "stop_requested": bool(r["stop_requested"]),
        "error": r["error"],
        "trigger": r["trigger"],
        # imported archives: signed, encrypted (authenticated by the key) or unverified
        "verification": r.get("verification") or ("sealed" if r["trigger"] != "import" else "unverified"),
        "requested_by": r["requested_by"],
        "storage": r["storage"],
        "source": r["source"],
        "current_collection": r["current_collection"],
        "collections": json.loads(r["collections"]) if r["collections"] else None,
        "sha256": r["sha256"],
        "locked_until": r["locked_until"],
        "failed_collections": json.loads(r["failed_collections"]) if r["failed_collections"] else None,
        # whether the archive is the source at one moment, how, and (MongoDB) its cluster time
        "point_in_time": json.loads(r["point_in_time"]) if r.get("point_in_time") else None,
        "worker": r["worker"],
        "attempt": r["attempt"],
        "position": r["position"],
    }


def restore_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **pace(r),
        "id": r["id"],
        "snapshot_id": r["snapshot_id"],
        "policy_id": r["policy_id"],
        "sub_name": r["sub_name"],
        "target": r["target"],
        "task_name": r["task_name"],
        "log_url": f"{BASE}/events?task_id={r['id']}",
        "elapsed_seconds": r["elapsed_seconds"],
        "items": r["items"],
        "progress": r["progress"],
        "created_at": r["created_at"],
        "started_at": r["started_at"],
        "finished_at": r["finished_at"],
        "transferred_bytes": r["transferred_bytes"],
        "status": r["status"],
        "stop_requested": bool(r["stop_requested"]),
        "error": r["error"],
        "requested_by": r["requested_by"],
        "requested_collections": json.loads(r["requested_collections"]),
        "options": json.loads(r["options"]),
        "dry_run": bool(r["dry_run"]),
        "consistency": json.loads(r["collections"]) if r["collections"] else None,
        "schema": json.loads(r["schema_notes"]) if r.get("schema_notes") else None,
        "worker": r["worker"],
        "attempt": r["attempt"],
        "position": r["position"],
    }


SHAPES = {
    "policies": ("policies", policy_row),
    "backups": ("backup_records", backup_row),
    "restores": ("restore_records", restore_row),
}


class Records:
    """Reads one kind of record (policies, backups, restores) shaped for the API."""

    def __init__(self, db: ViewDatabase) -> None:
        self.db = db

    def page(
        self, kind: str, filters: dict[str, Any], cursor: Any, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        table, shape = SHAPES[kind]
        rows, nxt = _page(self.db, table, filters, cursor, limit)
        return self._with_windows(kind, [shape(r) for r in rows]), nxt

    def one(self, kind: str, row_id: str) -> dict[str, Any] | None:
        table, shape = SHAPES[kind]
        r = _one(self.db, table, row_id)
        return self._with_windows(kind, [shape(r)])[0] if r else None

    def _with_windows(self, kind: str, shaped: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A Backup Record lists the capture window that follows its snapshot, if any; a
        policy, every window of a kept snapshot it can restore to a moment in."""
        if kind == "policies" and shaped:
            return self._restorable(shaped)
        if kind != "backups" or not shaped:
            return shaped
        ids = [r["id"] for r in shaped]
        marks = ", ".join(f"%(s{i})s" for i in range(len(ids)))
        found = self.db.query(
            f"SELECT snapshot_id, facts FROM capture_windows WHERE snapshot_id IN ({marks})",
            {f"s{i}": sid for i, sid in enumerate(ids)},
        )
        windows = {w["snapshot_id"]: json.loads(w["facts"]) for w in found}
        for row in shaped:
            row["capture"] = windows.get(row["id"])
        return shaped

    def _restorable(self, shaped: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Older windows stay restorable while their snapshots are kept: `restorable` lists
        them (oldest first, gaps between them visible) and `restorable_from` is the first."""
        ids = [r["id"] for r in shaped]
        marks = ", ".join(f"%(p{i})s" for i in range(len(ids)))
        kept = ", ".join(f"'{status}'" for status in HAS_ARCHIVE)
        found = self.db.query(
            "SELECT w.policy_id, w.facts FROM capture_windows w JOIN backup_records b "
            f"ON b.id = w.snapshot_id WHERE w.policy_id IN ({marks}) AND b.status IN ({kept})",
            {f"p{i}": pid for i, pid in enumerate(ids)},
        )
        by_policy: dict[str, list[dict[str, Any]]] = {}
        for w in found:
            facts = json.loads(w["facts"])
            if facts.get("restorable_until"):
                by_policy.setdefault(w["policy_id"], []).append(
                    {k: facts[k] for k in ("snapshot_id", "status", "restorable_from", "restorable_until")}
                )
        for row in shaped:
            windows = sorted(by_policy.get(row["id"], []), key=lambda w: str(w["restorable_from"]))
            row["restorable"] = windows
            row["restorable_from"] = windows[0]["restorable_from"] if windows else None
        return shaped

    def drill_ids_of_policy(self, policy_id: str) -> list[str]:
        rows = self.db.query("SELECT drill_id FROM policy_drills WHERE policy_id = %(p)s", {"p": policy_id})
        return [r["drill_id"] for r in rows]

    def restore_ids_of_policy(self, policy_id: str) -> list[str]:
        rows = self.db.query("SELECT id FROM restore_records WHERE policy_id = %(p)s", {"p": policy_id})
        return [r["id"] for r in rows]
