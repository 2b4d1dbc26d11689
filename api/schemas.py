"""JSON Schemas of the API: request bodies are validated against these, and the OpenAPI
document is generated from them, so the contract is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import available_timezones

from jsonschema import Draft202012Validator

from api import patterns
from api.records import BACKUP_STATUSES
from domain.errors import InvalidValue
from domain.policy import POLICY_STATUSES
from domain.values import (
    LSN_PATTERN,
    MOMENT_PATTERN,
    CollectionSelection,
    check_cron,
    check_timezone,
    parse_duration,
    parse_moment,
)


def _mapping_name(value: object, field: str) -> None:
    raise InvalidValue("mapping must map collection names to new names", "mapping")


def _restore_subject(data: Any, path: str) -> None:
    """What a restore restores: a snapshot, or a continuous policy at a moment or position."""
    if not isinstance(data, dict):
        return
    given = {k for k in ("snapshot_id", "policy_id", "to_time", "to_lsn") if k in data}
    if not given & {"snapshot_id", "policy_id"}:
        raise InvalidValue("snapshot_id is required (or policy_id with to_time or to_lsn)", "snapshot_id")
    if "snapshot_id" in given and given - {"snapshot_id"}:
        extra = sorted(given - {"snapshot_id"})[0]
        raise InvalidValue(f"{extra} goes with policy_id, not snapshot_id", extra)
    if "to_time" in given and "to_lsn" in given:
        raise InvalidValue("give one of to_time and to_lsn", "to_lsn")
    if "policy_id" in given and not given & {"to_time", "to_lsn"}:
        raise InvalidValue("to_time (or to_lsn) is required with policy_id", "to_time")


CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "moment": parse_moment,
    "restore_subject": _restore_subject,
    "duration": parse_duration,
    "cron": check_cron,
    "timezone": check_timezone,
    "collections": CollectionSelection.parse,
    "mapping": _mapping_name,
}

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}
REF = {"type": "string", "minLength": 1}
# "x-check" names the domain's own check, which says why a value is refused in its words.
DURATION = {"type": "string", "pattern": patterns.duration(), "x-check": "duration"}  # a unit always
# a collection name: not blank, no '/', not '.' or '..'
COLLECTION_NAME = {"type": "string", "pattern": r"^(?!\.\.?$)[^/]*[^/\s][^/]*$"}
NAMES = {"type": "array", "items": COLLECTION_NAME}
NEW_NAME = {**COLLECTION_NAME, "x-check": "mapping"}  # a restore mapping's new name
SCHEDULE = {
    "type": ["string", "null"],
    "description": "cron: 5 fields, or 6 with seconds last; an @macro; empty or null for none",
    "pattern": patterns.cron(),
    "not": {"type": "string", "pattern": patterns.cron_never_fires()},
    "x-check": "cron",
}
TIMEZONE = {"enum": [*sorted(available_timezones()), None], "description": "IANA zone; UTC by default",
            "x-check": "timezone"}  # fmt: skip
RETENTION = {
    "type": ["object", "null"],
    "properties": {
        "keep_last": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
        "expire_after": DURATION,
    },
    "additionalProperties": False,
}
COLLECTIONS = {
    "x-check": "collections",
    "oneOf": [
        NAMES,
        {
            "type": "object",
            "properties": {"include": NAMES, "exclude": NAMES},
            "additionalProperties": False,
        },
        {"type": "null"},
    ],
}
CONTINUOUS = {
    "description": "continuous capture after each snapshot (PostgreSQL, MongoDB): true, or its settings",
    "oneOf": [
        {"type": ["boolean", "null"]},
        {
            "type": "object",
            "properties": {
                "segment_seconds": DURATION,
                "segment_bytes": {"type": "integer", "minimum": 65536, "maximum": 1073741824},
                "max_slot_wal_mb": {"type": "integer", "minimum": 16, "maximum": 1048576},
            },
            "additionalProperties": False,
        },
    ],
}
DRILL_CHECKS = {
    "type": "array", "maxItems": 20,
    "items": {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": r"\S"},
}  # fmt: skip
DRILL_SETTING = {
    "description": "restore drills: the drill target, a schedule (in the policy's time zone), checks",
    "type": ["object", "null"],
    "required": ["target"],
    "properties": {"target": REF, "schedule": SCHEDULE, "checks": DRILL_CHECKS},
    "additionalProperties": False,
}
POLICY_FIELDS = {
    "name": NAME,
    "source": REF,
    "storage": REF,
    "schedule": SCHEDULE,
    "timezone": TIMEZONE,
    "retention": RETENTION,
    "collections": COLLECTIONS,
    "continuous": CONTINUOUS,
    "drill": DRILL_SETTING,
}
POLICY_CREATE = {
    "type": "object",
    "properties": POLICY_FIELDS,
    "required": ["name", "source", "storage"],
    "additionalProperties": False,
}
POLICY_EDIT = {
    "type": "object",
    "properties": POLICY_FIELDS,
    "minProperties": 1,
    "additionalProperties": False,
}
RESTORE_CREATE = {
    "type": "object",
    "properties": {
        "snapshot_id": {"type": "string", "format": "uuid"},
        "target": REF,
        "collections": {"oneOf": [NAMES, {"type": "null"}], "x-check": "collections"},
        "mapping": {"type": "object", "additionalProperties": NEW_NAME},
        "existing": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "keep_owners": {"type": "boolean"},
        "trust_unverified": {"type": "boolean"},
        "validate": {"type": "boolean", "description": "MongoDB: apply the target's validators"},
        "policy_id": {"type": "string", "format": "uuid", "description": "with to_time or to_lsn"},
        "to_time": {"type": "string", "pattern": MOMENT_PATTERN, "x-check": "moment",
                    "description": "a continuous policy: restore to this moment (ISO 8601 with offset)"},
        "to_lsn": {"type": "string", "pattern": LSN_PATTERN, "description": "... or to this WAL position"},
    },
    "required": ["target"],
    "x-check": "restore_subject",
    "oneOf": [
        {"required": ["snapshot_id"], "not": {"anyOf": [
            {"required": ["policy_id"]}, {"required": ["to_time"]}, {"required": ["to_lsn"]}]}},
        {"required": ["policy_id", "to_time"], "not": {"anyOf": [
            {"required": ["snapshot_id"]}, {"required": ["to_lsn"]}]}},
        {"required": ["policy_id", "to_lsn"], "not": {"anyOf": [
            {"required": ["snapshot_id"]}, {"required": ["to_time"]}]}},
    ],
    "additionalProperties": False,
}  # fmt: skip

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
    "required": ["error", "field"],
    "additionalProperties": False,
}


def _obj(
    required: dict[str, Any], optional: dict[str, Any] | None = None, closed: bool = True
) -> dict[str, Any]:
    """An object with these fields; `closed`: no other field (a field the API adds must be
    documented here, or the contract test fails)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        **({"additionalProperties": False} if closed else {}),
    }


_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_S, _I, _F = {"type": ["string", "null"]}, {"type": ["integer", "null"]}, {"type": ["number", "null"]}
_ID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_STRINGS = {"type": "array", "items": _STR}

MUTATION = _obj(
    {"id": _ID, "position": _INT},
    {
        "policy_id": _ID,  # Take a Snapshot: the snapshot's policy
        "snapshot_id": _ID,  # Rebuild: the fresh snapshot
        "archives_removed": _INT,  # Delete a policy
        "replayed": {"const": True, "description": "the first outcome under this Idempotency-Key"},
        "views_lagging": {"const": True, "description": "written; the record views did not show it in time"},
    },
)
PLANNED_SNAPSHOT = _obj(
    {"id": _ID, "sub_name": _STR, "policy_name": _STR, "archive_key": _STR, "storage": _STR, "bytes": _INT},
    {"refused": {"type": "string", "description": "why it cannot be deleted now (object lock)"}},
)
DELETION_PLAN = _obj(
    {
        "dry_run": _BOOL,
        "snapshots": {"type": "array", "items": PLANNED_SNAPSHOT},
        "count": _INT,
        "bytes": _INT,
    },
    {"id": _ID, "position": _INT},
)
SYNC_REPORT = _obj(
    {
        "storage": _STR,
        "dry_run": _BOOL,
        "imported": {"type": "array", "items": _obj(
            {"archive_key": _STR, "policy": _STR, "verification": _STR},
            {"snapshot_id": _ID, "position": _INT},
        )},
        "known": _INT,
        "changed": {"type": "array", "items": _obj({"key": _STR, "snapshot_id": _ID})},
        "incomplete": _STRINGS,
        "invalid": {"type": "array", "items": _obj({"key": _STR, "reason": _STR})},
    }
)  # fmt: skip
HEALTH = {"oneOf": [{"type": "null"}, _obj({"ok": _BOOL, "checked_at": _TIME, "seconds": _NUM, "error": _S})]}
STORAGES = _obj(
    {
        "items": {"type": "array", "items": _obj({
            "name": _STR, "kind": {"enum": ["local", "s3"]}, "where": _STR,
            "object_lock": {"enum": ["compliance", "governance", None]}, "encrypted": _BOOL,
            "sync_interval_seconds": _F, "health": HEALTH,
        })}
    }
)  # fmt: skip
RETENTION_STATE = _obj({"keep_last": _I, "expire_after_seconds": _I})
CAPTURE_STATE = {
    "type": ["object", "null"],
    "description": "a capture window: restorable from its start to restorable_until",
    "properties": {
        "capture_id": _ID, "snapshot_id": _ID, "status": {"enum": ["capturing", "failed", "stopped"]},
        "slot": _STR, "restorable_from": _TIME, "restorable_until": _TIME_OR_NULL, "checked_lsn": _STR,
        "segments": _INT, "transactions": _INT, "changes": _INT, "bytes": _INT, "reason": _S,
    },
}  # fmt: skip
SEGMENT = _obj(
    {
        "from_position": _STR, "to_position": _STR, "first_commit": _TIME, "last_commit": _TIME,
        "transactions": _INT, "changes": _INT, "bytes": _INT, "sha256": _STR, "key": _STR, "encrypted": _BOOL,
    }
)  # fmt: skip
RESTORABLE_WINDOW = _obj(
    {
        "snapshot_id": _ID, "status": {"enum": ["capturing", "failed", "stopped"]}, "restorable_from": _TIME,
        "restorable_until": _TIME,
    }
)  # fmt: skip
_DRILL_STATUS = {"enum": ["requested", "running", "passed", "failed", "stopped"]}
LAST_DRILL = {
    "type": ["object", "null"],
    "description": "the newest drill of the policy's snapshots: a restore into a scratch copy, checked",
    "properties": {
        "drill_id": _ID, "status": _DRILL_STATUS, "snapshot_id": _ID, "sub_name": _STR, "target": _STR,
        "at": _TIME, "rto_seconds": {"type": ["number", "null"]}, "reason": _S,
    },
}  # fmt: skip
DRILL_CREATE = {
    "type": "object",
    "properties": {
        "target": {"type": "string", "minLength": 1},
        "checks": {
            "type": "array",
            "maxItems": 20,
            "items": {"type": "string", "minLength": 1, "maxLength": 4000},
        },
    },
    "additionalProperties": False,
}
DRILL = _obj(
    {
        "id": _ID, "policy_id": _ID, "snapshot_id": _ID, "sub_name": _STR, "target": _STR, "scratch": _STR,
        "status": _DRILL_STATUS, "attempt": _INT, "rto_seconds": {"type": ["number", "null"]}, "reason": _S,
        "checks": _STRINGS, "result": {"type": ["object", "null"]},
    }
)  # fmt: skip
DRILL_STATE = {
    "type": ["object", "null"],
    "properties": {"target": _STR, "schedule": _S, "checks": _STRINGS},
}
CONTINUOUS_STATE = {
    "type": ["object", "null"],
    "properties": {"segment_seconds": _INT, "segment_bytes": _INT, "max_slot_wal_mb": _INT},
}
SELECTION_STATE = _obj({"include": _STRINGS, "exclude": _STRINGS})
_POLICY_STATUS = {"enum": list(POLICY_STATUSES)}
_RUN_STATUS = {"enum": list(BACKUP_STATUSES)}
POLICY = _obj(
    {
        "id": _ID, "name": _STR, "source": _STR, "storage": _STR, "schedule": _S, "timezone": _STR,
        "next_run_at": _TIME_OR_NULL, "last_slot": _S, "last_success_at": _TIME_OR_NULL,
        "last_failure_at": _TIME_OR_NULL, "last_failure_reason": _S, "retention": RETENTION_STATE,
        "collections": SELECTION_STATE, "continuous": CONTINUOUS_STATE, "status": _POLICY_STATUS,
        "drill": DRILL_STATE,
        "capture": CAPTURE_STATE, "capture_lag_seconds": {"type": ["number", "null"]},
        "restorable": {"type": "array", "items": RESTORABLE_WINDOW}, "restorable_from": _TIME_OR_NULL,
        "last_drill": LAST_DRILL, "verified_restorable_at": _TIME_OR_NULL, "next_drill_at": _TIME_OR_NULL,
        "created_at": _TIME, "updated_at": _TIME,
        "created_by": _S, "snapshots_count": _INT, "last_snapshot_id": {"type": ["string", "null"]},
        "rebuilds": _INT, "events_url": _STR, "position": _INT, "storage_health": HEALTH,
    }
)  # fmt: skip
POLICY_AS_OF = _obj(
    {
        "id": _ID, "name": _STR, "source": _STR, "storage": _STR, "schedule": _S, "timezone": _STR,
        "retention": RETENTION_STATE, "collections": SELECTION_STATE, "continuous": CONTINUOUS_STATE,
        "status": _POLICY_STATUS, "created_at": _TIME, "snapshots_count": _INT, "rebuilds": _INT,
        "version": _INT,
        "as_of": {"type": "string", "description": "the time or position asked for"}, "position": _INT,
    }
)  # fmt: skip
_PACE = {"items_per_second": _F, "bytes_per_second": _F, "eta_seconds": _F}  # running rows only
_RUN = {
    **_PACE, "id": _ID, "policy_id": _ID, "sub_name": _STR, "task_name": _S, "log_url": _STR,
    "elapsed_seconds": _F, "items": _INT, "progress": _NUM, "created_at": _TIME, "started_at": _TIME_OR_NULL,
    "finished_at": _TIME_OR_NULL, "transferred_bytes": _INT, "stop_requested": _BOOL, "error": _S,
    "requested_by": _S, "worker": _S, "attempt": _I, "position": _INT,
}  # fmt: skip
COLLECTION_FIGURES = {  # per collection, as the manifest has them
    "type": "object",
    "properties": {"items": _INT, "bytes": _INT, "raw_bytes": _INT, "sha256": _STR},
}
BACKUP_RECORD = _obj(
    {
        **_RUN, "policy_name": _STR, "file_name": _STR, "download_url": _S, "expires_at": _TIME_OR_NULL,
        "status": _RUN_STATUS, "trigger": {"enum": ["manual", "schedule", "rebuild", "import"]},
        "verification": {"enum": ["sealed", "signed", "encrypted", "unverified"]},
        "storage": _STR, "source": _STR, "current_collection": _S,
        "collections": {"type": ["object", "null"], "additionalProperties": COLLECTION_FIGURES},
        "sha256": _S, "locked_until": _TIME_OR_NULL,
        "last_drill": {"type": ["object", "null"], "properties": {
            "drill_id": _ID, "status": {"enum": ["passed", "failed"]}, "at": _TIME,
            "rto_seconds": {"type": ["number", "null"]}, "reason": _S}},
        "failed_collections": {"type": ["object", "null"], "additionalProperties": _STR},
        "point_in_time": {"type": ["object", "null"], "properties": {
            "consistent": _BOOL, "how": _STR, "cluster_time": _STR, "read_from": _STR,
            "capture": {"type": "object", "properties": {
                "slot": _STR, "from_position": _STR, "from_time": _TIME}},
        }},
        "capture": CAPTURE_STATE,
    }
)  # fmt: skip
RESTORE_RECORD = _obj(
    {
        **_RUN, "snapshot_id": _ID, "target": _STR, "status": {"enum": _RUN_STATUS["enum"][:-1]},
        "requested_collections": _STRINGS,
        "options": {"type": "object", "properties": {
            "existing": _S, "keep_owners": {"type": ["boolean", "null"]}, "validate": _BOOL,
            "mapping": {"type": "object", "additionalProperties": _STR}, "trust_unverified": _BOOL,
        }},
        "dry_run": _BOOL,
        "consistency": {"type": ["object", "null"], "additionalProperties": {
            "type": "object", "properties": {"expected": _INT, "found": _INT, "ok": _BOOL},
        }},
        "schema": {"type": ["object", "null"], "description": (
            "PostgreSQL: objects skipped, roles missing; MongoDB: oplog replayed, validators' refusals"
        )},
    }
)  # fmt: skip
EVENT = _obj(
    {
        "position": _INT, "time": _TIME, "aggregate_type": _STR, "aggregate_id": _ID, "version": _INT,
        "type": _STR, "actor": _S, "data": {"type": "object"}, "message": _STR,
    }
)  # fmt: skip
HEALTHZ = _obj({"status": {"const": "ok"}, "database": {"enum": ["sqlite", "postgresql"]},
                "database_answers": _BOOL, "worker": _BOOL})  # fmt: skip


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item}, "next_cursor": _S},
        "additionalProperties": False,
    }


def validate(schema: dict[str, Any], data: Any) -> None:
    """Raises InvalidValue naming the first offending field (dotted path)."""
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return
    err = errors[0]
    path = ".".join(str(p) for p in err.path)
    if err.validator == "required":
        missing = err.message.split("'")[1]
        path = f"{path}.{missing}" if path else missing
        raise InvalidValue(f"{path} is required", path)
    if err.validator == "additionalProperties":
        extra = err.message.split("'")[1]
        path = f"{path}.{extra}" if path else extra
        raise InvalidValue(f"{path} is not a known field", path)
    if err.validator == "minProperties":
        raise InvalidValue("nothing to change: give at least one field", None)
    check = err.schema.get("x-check") if isinstance(err.schema, dict) else None
    if check is not None:
        CHECKS[check](err.instance, path)  # raises, in the domain's words
    message = err.message if len(err.message) <= 200 else err.message[:200] + "..."
    raise InvalidValue(f"{path or 'body'}: {message}", path or "body")
