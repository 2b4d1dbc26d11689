"""The Event Log: a replay of the event store itself, not a projection.

Globally it pages through the notification log; for a policy or a task it selects the
notifications of just those aggregates, still in notification (position) order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.capture import Capture
from domain.errors import InvalidValue
from domain.idempotency import RequestKeyRecord
from domain.policy import BackupPolicy, PolicyNameClaim
from domain.restore import Restore
from domain.slots import RunSlot
from domain.snapshot import Snapshot

if TYPE_CHECKING:
    from psycopg.sql import Composed

_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}
AGGREGATES = (BackupPolicy, Snapshot, Restore, PolicyNameClaim, RunSlot, RequestKeyRecord, Capture)


def _event_classes() -> dict[str, type]:
    out: dict[str, type] = {}
    for agg in AGGREGATES:
        for name in dir(agg):
            cls = getattr(agg, name)
            if isinstance(cls, type) and issubclass(cls, CanMutateAggregate) and name[0].isupper():
                if name not in ("Event", "Created"):
                    out[name] = cls
    return out


EVENT_TYPES = _event_classes()


def topics_for(types: Sequence[str]) -> list[str]:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidValue(
            f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(EVENT_TYPES))}", "type"
        )
    return [get_topic(EVENT_TYPES[t]) for t in types]


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _mb(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n / 1024:.1f} KiB"


def message(kind: str, d: dict[str, Any]) -> str:
    """One line an operator can read without opening the data."""
    by = f" by {d['actor']}" if d.get("actor") else ""
    match kind:
        case "PolicyCreated":
            return f"policy {d['name']} created{by}: {d['source']} -> {d['storage']}"
        case "PolicyEdited":
            return f"policy edited{by}: " + ", ".join(
                f"{k} {json.dumps(v['old'])} -> {json.dumps(v['new'])}" for k, v in d["changes"].items()
            )
        case "PolicyStopped" | "PolicyResumed" | "PolicyRebuilt":
            return f"policy {kind.removeprefix('Policy').lower()}{by}"
        case "PolicyDeleted":
            keep = " (archives kept)" if d.get("keep_files") else ""
            return f"policy deleted{by}{keep}"
        case "SnapshotTaken":
            return f"snapshot #{d['sequence']} taken ({d['trigger']}){by}"
        case "SnapshotRequested":
            return f"snapshot {d['sub_name']} requested ({d['trigger']}){by}: {d['file_name']}"
        case "SnapshotStarted" | "RestoreStarted":
            return f"{d['task_name']} started on {d['worker']} (attempt {d['attempt']})"
        case "SnapshotProgressed" | "RestoreProgressed":
            where = f" in {d['collection']}" if d.get("collection") else ""
            return f"{d['percent']:.0f}%: {d['items']} items, {_mb(d['bytes'])}{where}"
        case "SnapshotCompleted":
            return (
                f"completed: {d['items']} items, {_mb(d['bytes'])} in "
                f"{d['elapsed_seconds']:.1f}s, sha256 {d['sha256'][:12]}"
            )
        case "SnapshotPartiallyFailed":
            return f"partially failed: {d['items']} items, {_mb(d['bytes'])} archived; failed " + ", ".join(
                f"{n} ({why})" for n, why in sorted(d["failed_collections"].items())
            )
        case "SnapshotImported":
            return (
                f"imported from storage{by}: {d['items']} items, {_mb(d['bytes'])}, "
                f"finished {d['finished_at']}"
            )
        case "RestoreCompleted":
            schema = d.get("schema") or {}
            notes = ""
            if schema.get("skipped"):
                notes += f"; {len(schema['skipped'])} objects skipped"
            if schema.get("missing_roles"):
                notes += f"; roles missing in the target: {', '.join(schema['missing_roles'])}"
            return (
                f"completed and verified: {d['items']} items, {_mb(d['bytes'])} in "
                f"{d['elapsed_seconds']:.1f}s{notes}"
            )
        case "RestorePlanned":
            facts = d.get("facts") or {}
            mode = "in one transaction" if facts.get("mode") == "single" else "in parallel"
            return f"target checked, writing {mode} ({len(facts.get('existing', []))} objects already there)"
        case "SnapshotFailed" | "RestoreFailed":
            return f"failed: {d['reason']}"
        case "SnapshotStopRequested" | "RestoreStopRequested":
            return f"stop requested{by}"
        case "SnapshotStopped" | "RestoreStopped":
            return f"stopped{by} at {d['percent']:.0f}% ({d['items']} items)"
        case "SnapshotDeleted":
            files = "archive removed" if d["files_removed"] else "no archive removed"
            return f"snapshot deleted ({d['reason']}){by}, {files}"
        case "RestoreRequested":
            return f"restore {d['sub_name']} requested{by}"
        case "PolicyNameClaimed" | "PolicyNameReclaimed":
            return f"name {d.get('name', '')} claimed by policy {d['policy_id']}".replace("  ", " ")
        case "PolicyNameReleased":
            return f"name released by policy {d['policy_id']}"
        case "RunSlotTaken" | "RunSlotHandedOver":
            return f"run slot {d.get('key', '')} held by {d['kind']} {d['holder']}".replace("  ", " ")
        case "RequestKeyRecorded":
            return f"{d['command']} by {d['actor']} recorded under Idempotency-Key {d['key']}"
        case "SnapshotHeartbeat" | "RestoreHeartbeat" | "DrillHeartbeat":
            return "lease renewed"
        case "DrillRequested":
            checks = f", {len(d['checks'])} checks" if d.get("checks") else ""
            return f"restore drill of {d['sub_name']} requested{by} on target {d['target']}{checks}"
        case "DrillStarted":
            return f"restore drill started on {d['worker']} (attempt {d['attempt']})"
        case "DrillProgressed":
            return f"restore drill: {d['items']} items restored ({d['percent']}%)"
        case "DrillPassed":
            found = d["result"].get("collections") or {}
            rows = sum(int(c.get("rows", 0)) for c in found.values())
            return (
                f"restore drill passed: {len(found)} collections, {rows} rows equal to the archive, "
                f"{len(d['result'].get('checks') or [])} checks true; restored in {d['rto_seconds']} s, "
                "scratch copy removed"
            )
        case "DrillFailed":
            return f"restore drill failed: {d['reason']} (scratch copy removed)"
        case "DrillStopRequested":
            return f"restore drill stop requested{by}"
        case "DrillStopped":
            return "restore drill stopped"
        case "CaptureWindowImported":
            return f"capture window imported from storage: from {d['window'].get('from_position')}"
        case "CaptureStarted":
            return (
                f"continuous capture started at {d['from_position']} (slot {d['slot']}), "
                f"after snapshot {d['snapshot_id']}"
            )
        case "ChangesArchived":
            return (
                f"changes archived: {d['transactions']} transactions, {d['items']} changes, "
                f"{_mb(d['bytes'])}, "
                f"{d['from_lsn']} -> {d['to_lsn']}, commits {d['first_commit']} to {d['last_commit']}"
            )
        case "CaptureChecked":
            return f"no change since the last segment, up to {d['lsn']} at {d['at']}"
        case "CaptureFailed":
            return f"continuous capture failed: {d['reason']}"
        case "CaptureStopped":
            return f"continuous capture stopped: {d['reason']}"
    return kind


class EventLog:
    def __init__(self, app: Application[UUID]) -> None:
        self.app = app

    def entry(self, n: Notification) -> dict[str, Any]:
        # every event in this store is an aggregate's, and those carry their timestamp
        event = cast("CanMutateAggregate[UUID]", self.app.mapper.to_domain_event(n))
        kind = type(event).__name__
        data = {k: _jsonable(v) for k, v in vars(event).items() if k not in _BASE_FIELDS}
        return {
            "position": n.id,
            "time": event.timestamp.isoformat(),
            "aggregate_type": type(event).__qualname__.split(".")[0],
            "aggregate_id": str(n.originator_id),
            "version": n.originator_version,
            "type": kind,
            "actor": data.get("actor"),
            "data": data,
            "message": message(kind, data),
        }

    def global_page(self, after: int, limit: int, types: Sequence[str] = ()) -> list[dict[str, Any]]:
        notifications = self.app.recorder.select_notifications(
            start=after, limit=limit, topics=topics_for(types), inclusive_of_start=False
        )
        return [self.entry(n) for n in notifications]

    def for_aggregates(self, ids: Sequence[UUID], after: int, limit: int) -> list[dict[str, Any]]:
        return [self.entry(n) for n in self._select_by_originators(ids, after, limit)]

    def _select_by_originators(self, ids: Sequence[UUID], after: int, limit: int) -> list[Notification]:
        if not ids:
            return []
        recorder: Any = self.app.recorder
        table = recorder.events_table_name
        statement: Composed | str
        if type(recorder).__module__.startswith("eventsourcing.postgres"):
            from psycopg.sql import SQL, Identifier

            statement = SQL(
                "SELECT notification_id AS id, originator_id, originator_version, topic, state "
                "FROM {schema}.{table} WHERE originator_id = ANY(%s) AND notification_id > %s "
                "ORDER BY notification_id LIMIT %s"
            ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
            params: tuple[Any, ...] = (list(ids), after, limit)
        else:
            marks = ",".join("?" * len(ids))
            statement = (
                f"SELECT rowid AS id, originator_id, originator_version, topic, state "
                f"FROM {table} WHERE originator_id IN ({marks}) AND rowid > ? "
                f"ORDER BY rowid LIMIT ?"
            )
            params = (*[i.hex for i in ids], after, limit)
        with recorder.datastore.transaction(commit=False) as cur:
            cur.execute(statement, params)
            rows = cur.fetchall()
        return [
            Notification(
                id=row["id"],
                originator_id=recorder.convert_originator_id(row["originator_id"])
                if hasattr(recorder, "convert_originator_id")
                else row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
        ]
