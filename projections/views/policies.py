"""The Policies view: each policy with its schedule's next slot, last success and failure."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from domain.schedule import next_slot
from projections.rowbuffer import Rows
from projections.views.base import Handler, View, _update, dumps, failure_reason, iso, oid

# --------------------------------------------------------------------- Policies
policies = View(
    name="policies",
    table="policies",
    version=6,  # 3: continuous; 4: capture; 5: a window is restorable from its snapshot's point; 6: drills
    cost=2,
    extra_tables=["policy_snapshots", "capture_windows", "policy_drills"],
    ddl=[
        """CREATE TABLE IF NOT EXISTS policies (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, source TEXT NOT NULL,
            storage TEXT NOT NULL, schedule TEXT, timezone TEXT NOT NULL, retention TEXT NOT NULL,
            collections TEXT NOT NULL, continuous TEXT, drill TEXT, status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, created_by TEXT, snapshots_count BIGINT NOT NULL,
            last_snapshot_id TEXT, rebuilds BIGINT NOT NULL, last_slot TEXT, next_run_at TEXT,
            last_success_at TEXT, last_failure_at TEXT, last_failure_reason TEXT, capture TEXT,
            last_drill TEXT, verified_restorable_at TEXT, next_drill_at TEXT, last_drill_slot TEXT,
            position BIGINT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS policies_created ON policies (created_at, id)",
        # Which policy a snapshot belongs to, so snapshot outcomes reach the policy row.
        """CREATE TABLE IF NOT EXISTS policy_snapshots (
            snapshot_id TEXT PRIMARY KEY, policy_id TEXT NOT NULL)""",
        # Which policy and snapshot a capture window belongs to, for its later events.
        """CREATE TABLE IF NOT EXISTS capture_windows (
            capture_id TEXT PRIMARY KEY, policy_id TEXT NOT NULL, snapshot_id TEXT NOT NULL,
            facts TEXT NOT NULL)""",
        # Which policy a drill belongs to, for its later events (and the policy's Event Log).
        """CREATE TABLE IF NOT EXISTS policy_drills (
            drill_id TEXT PRIMARY KEY, policy_id TEXT NOT NULL, snapshot_id TEXT NOT NULL,
            sub_name TEXT NOT NULL, target TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS policy_drills_policy ON policy_drills (policy_id)",
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


def _next_drill(rows: Rows, policy_id: str, after: datetime) -> None:
    """next_drill_at follows from the events alone: the drill schedule's next slot after
    the last one drilled (or after the policy's change)."""
    row = rows.get("policies", policy_id)
    if row is None:
        return
    drill = json.loads(row["drill"]) if row.get("drill") else None
    value = None
    if drill and drill.get("schedule") and row["status"] == "active":
        last = datetime.fromisoformat(row["last_drill_slot"]) if row.get("last_drill_slot") else None
        try:
            value = iso(next_slot(drill["schedule"], row["timezone"], max(after, last) if last else after))
        except (ValueError, KeyError):
            value = None
    rows.update("policies", policy_id, {"next_drill_at": value})


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
            "continuous": dumps(e.continuous) if e.continuous else None,
            "drill": dumps(e.drill) if getattr(e, "drill", None) else None,
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
            "capture": None,
            "last_drill": None,
            "verified_restorable_at": None,
            "next_drill_at": None,
            "last_drill_slot": None,
            "position": position,
        },
        new=True,
    )
    _next_run(rows, oid(e), e.timestamp)
    _next_drill(rows, oid(e), e.timestamp)


@policies.on("PolicyEdited")
def _policy_edited(rows: Rows, e: Any, position: int) -> None:
    values = {
        k: (dumps(v["new"]) if v["new"] is not None or k not in ("continuous", "drill") else None)
        if k in ("retention", "collections", "continuous", "drill")
        else v["new"]
        for k, v in e.changes.items()
    }
    _update(rows, "policies", oid(e), position, updated_at=iso(e.timestamp), **values)
    _next_run(rows, oid(e), e.timestamp)
    _next_drill(rows, oid(e), e.timestamp)


def _policy_status(status: str) -> Handler:
    def handler(rows: Rows, e: Any, position: int) -> None:
        pid = oid(e)
        _update(rows, "policies", pid, position, status=status, updated_at=iso(e.timestamp))
        _next_run(rows, pid, e.timestamp)
        _next_drill(rows, pid, e.timestamp)

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
    _next_drill(rows, pid, e.timestamp)


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


# ----------------------------------------------------------------- capture windows
def _window_changed(rows: Rows, e: Any, position: int, **changes: Any) -> None:
    """A window's state, kept on its row and, while it is the policy's newest, on the policy."""
    link = rows.get("capture_windows", oid(e))
    if link is None:
        return
    window = {**json.loads(link["facts"]), **changes}
    rows.update("capture_windows", oid(e), {"facts": dumps(window)})
    policy = rows.get("policies", link["policy_id"])
    current = json.loads(policy["capture"]) if policy is not None and policy["capture"] else None
    if current is not None and current.get("capture_id") == oid(e):
        _update(rows, "policies", link["policy_id"], position, capture=dumps(window))


@policies.on("CaptureStarted")
def _capture_started(rows: Rows, e: Any, position: int) -> None:
    started = getattr(e, "from_time", None)  # older events lack it: when the capture started
    window = {
        "capture_id": oid(e),
        "snapshot_id": str(e.snapshot_id),
        "status": "capturing",
        "slot": e.slot,
        "restorable_from": iso(datetime.fromisoformat(started) if started else e.timestamp),
        "restorable_until": None,
        "checked_lsn": e.from_position,
        "segments": 0,
        "transactions": 0,
        "changes": 0,
        "bytes": 0,
        "reason": None,
    }
    rows.insert(
        "capture_windows",
        {"capture_id": oid(e), "policy_id": str(e.policy_id), "snapshot_id": str(e.snapshot_id),
         "facts": dumps(window)},
        new=True,
    )  # fmt: skip
    _update(rows, "policies", str(e.policy_id), position, capture=dumps(window))


@policies.on("ChangesArchived")
def _changes_archived(rows: Rows, e: Any, position: int) -> None:
    link = rows.get("capture_windows", oid(e))
    if link is None:
        return
    before = json.loads(link["facts"])
    _window_changed(
        rows, e, position,
        checked_lsn=e.until_lsn or e.to_lsn, restorable_until=e.until_time or e.last_commit,
        segments=before["segments"] + 1, transactions=before["transactions"] + e.transactions,
        changes=before["changes"] + e.items, bytes=before["bytes"] + e.bytes,
    )  # fmt: skip


@policies.on("CaptureChecked")
def _capture_checked(rows: Rows, e: Any, position: int) -> None:
    _window_changed(rows, e, position, checked_lsn=e.lsn, restorable_until=e.at)


@policies.on("CaptureFailed")
def _capture_failed(rows: Rows, e: Any, position: int) -> None:
    _window_changed(rows, e, position, status="failed", reason=e.reason)


@policies.on("CaptureStopped")
def _capture_stopped(rows: Rows, e: Any, position: int) -> None:
    _window_changed(rows, e, position, status="stopped", reason=e.reason)


# -------------------------------------------------------------------- drills
def _drill_changed(rows: Rows, e: Any, position: int, **facts: Any) -> None:
    """The policy's last drill: the newest one asked for, as it goes."""
    link = rows.get("policy_drills", oid(e))
    if link is None:
        return
    policy = rows.get("policies", link["policy_id"])
    if policy is None:
        return
    current = json.loads(policy["last_drill"]) if policy["last_drill"] else None
    if current is not None and current["drill_id"] != oid(e):
        return  # a newer drill was asked for since
    values: dict[str, Any] = {"last_drill": dumps({**(current or {}), **facts})}
    if facts.get("status") == "passed":
        values["verified_restorable_at"] = facts["at"]
    _update(rows, "policies", link["policy_id"], position, **values)


@policies.on("DrillRequested")
def _drill_requested(rows: Rows, e: Any, position: int) -> None:
    rows.insert(
        "policy_drills",
        {"drill_id": oid(e), "policy_id": str(e.policy_id), "snapshot_id": str(e.snapshot_id),
         "sub_name": e.sub_name, "target": e.target},
        new=True,
    )  # fmt: skip
    if rows.get("policies", str(e.policy_id)) is None:
        return
    if getattr(e, "slot", None) is not None:  # a scheduled drill: the schedule moves on
        rows.update("policies", str(e.policy_id), {"last_drill_slot": iso(e.slot)})
        _next_drill(rows, str(e.policy_id), e.slot)
    last = {"drill_id": oid(e), "status": "requested", "snapshot_id": str(e.snapshot_id),
            "sub_name": e.sub_name, "target": e.target, "at": iso(e.timestamp), "rto_seconds": None,
            "reason": None}  # fmt: skip
    _update(rows, "policies", str(e.policy_id), position, last_drill=dumps(last))


@policies.on("DrillStarted")
def _drill_started(rows: Rows, e: Any, position: int) -> None:
    _drill_changed(rows, e, position, status="running", at=iso(e.timestamp))


@policies.on("DrillPassed")
def _drill_passed(rows: Rows, e: Any, position: int) -> None:
    _drill_changed(rows, e, position, status="passed", at=iso(e.timestamp), rto_seconds=e.rto_seconds)


@policies.on("DrillFailed")
def _drill_failed(rows: Rows, e: Any, position: int) -> None:
    _drill_changed(rows, e, position, status="failed", at=iso(e.timestamp), reason=failure_reason(e))


@policies.on("DrillStopped")
def _drill_stopped(rows: Rows, e: Any, position: int) -> None:
    _drill_changed(rows, e, position, status="stopped", at=iso(e.timestamp))
