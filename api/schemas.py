"""JSON Schemas of the API: request bodies are validated against these, and the OpenAPI
document is generated from them, so the contract is written once."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from domain.errors import InvalidValue
from domain.values import parse_duration

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}
REF = {"type": "string", "minLength": 1}
# A unit always ('30d', never 30); "x-duration" makes a refusal say so in the domain's words.
DURATION = {"type": "string", "pattern": r"^\s*\d+\s*[smhdw]\s*$", "x-duration": True}
NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
RETENTION = {
    "type": ["object", "null"],
    "properties": {
        "keep_last": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
        "expire_after": DURATION,
    },
    "additionalProperties": False,
}
COLLECTIONS = {
    "oneOf": [
        NAMES,
        {
            "type": "object",
            "properties": {"include": NAMES, "exclude": NAMES},
            "additionalProperties": False,
        },
        {"type": "null"},
    ]
}
POLICY_FIELDS = {
    "name": NAME,
    "source": REF,
    "storage": REF,
    "schedule": {"type": ["string", "null"], "description": "cron: 5 fields, or 6 with seconds last"},
    "timezone": {"type": ["string", "null"], "description": "IANA zone; UTC by default"},
    "retention": RETENTION,
    "collections": COLLECTIONS,
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
        "collections": {"oneOf": [NAMES, {"type": "null"}]},
        "mapping": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        "existing": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "keep_owners": {"type": "boolean"},
        "trust_unverified": {"type": "boolean"},
    },
    "required": ["snapshot_id", "target"],
    "additionalProperties": False,
}

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
    "required": ["error", "field"],
}
MUTATION = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "position": {"type": "integer"}},
    "required": ["id", "position"],
}
DELETION_PLAN = {
    "type": "object",
    "required": ["dry_run", "snapshots", "count", "bytes"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "snapshots": {"type": "array", "items": {"type": "object"}},
        "count": {"type": "integer"},
        "bytes": {"type": "integer"},
    },
}
MUTATION_OR_PLAN = {"oneOf": [MUTATION, DELETION_PLAN]}
SYNC_REPORT = {
    "type": "object",
    "required": ["storage", "dry_run", "imported", "known", "changed", "incomplete", "invalid"],
    "properties": {
        "storage": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "imported": {"type": "array", "items": {"type": "object"}},
        "known": {"type": "integer"},
        "changed": {"type": "array", "items": {"type": "object"}},
        "incomplete": {"type": "array", "items": {"type": "string"}},
        "invalid": {"type": "array", "items": {"type": "object"}},
    },
}
_S, _N, _I, _F = (
    {"type": ["string", "null"]},
    {"type": "number"},
    {"type": "integer"},
    {"type": ["number", "null"]},
)
POLICY = {
    "type": "object",
    "required": ["id", "name", "source", "storage", "status", "created_at"],
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "status": {"type": "string"},
                   "next_run_at": _S, "last_success_at": _S, "last_failure_at": _S},
}  # fmt: skip
BACKUP_RECORD = {
    "type": "object",
    "required": ["id", "policy_id", "sub_name", "file_name", "download_url", "task_name", "elapsed_seconds",
                 "items", "progress", "created_at", "expires_at", "transferred_bytes", "status", "error"],
    "properties": {"id": {"type": "string"}, "sub_name": {"type": "string"}, "file_name": {"type": "string"},
                   "download_url": _S, "task_name": _S, "elapsed_seconds": _F, "items": _I, "progress": _N,
                   "created_at": {"type": "string"}, "expires_at": _S, "transferred_bytes": _I,
                   "status": {"type": "string"}, "error": _S},
}  # fmt: skip
RESTORE_RECORD = {
    "type": "object",
    "required": ["id", "snapshot_id", "policy_id", "sub_name", "task_name", "elapsed_seconds", "items",
                 "progress", "created_at", "status", "error"],
    "properties": {"id": {"type": "string"}, "items": _I, "progress": _N, "status": {"type": "string"}},
}  # fmt: skip
EVENT = {
    "type": "object",
    "required": ["position", "time", "aggregate_type", "aggregate_id", "version", "type", "actor", "data",
                 "message"],
    "properties": {"position": _I, "type": {"type": "string"}, "message": {"type": "string"},
                   "data": {"type": "object"}},
}  # fmt: skip


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item}, "next_cursor": _S},
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
    if isinstance(err.schema, dict) and err.schema.get("x-duration"):
        parse_duration(err.instance, path)  # raises with the accepted units
    message = err.message if len(err.message) <= 200 else err.message[:200] + "..."
    raise InvalidValue(f"{path or 'body'}: {message}", path or "body")
