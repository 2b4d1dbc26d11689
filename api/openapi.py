"""The OpenAPI 3.1 document, generated from the request/response schemas in api/schemas.py
and one table of operations; a test checks the table covers every route."""

from __future__ import annotations

from typing import Any

from api import schemas
from api.records import BACKUP_STATUSES, POLICY_STATUSES

UUID_PARAM = {"type": "string", "format": "uuid"}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}}
AFTER = {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}}
TIME_RANGE = [
    {"name": "created_after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "created_before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
]
EVENT_TIME_RANGE = [
    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
]


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID_PARAM}


def _status(values: tuple[str, ...]) -> dict[str, Any]:
    return {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(values)}}


POLICY_ID, SNAPSHOT_ID, RESTORE_ID = _path("policy_id"), _path("snapshot_id"), _path("restore_id")
POLICY_FILTER = {"name": "policy_id", "in": "query", "schema": UUID_PARAM}
KEEP_FILES = {"name": "keep_files", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}}
AS_OF = {
    "name": "as_of",
    "in": "query",
    "description": "an ISO-8601 time or an event position: the policy as it was then",
    "schema": {"type": "string"},
}
DRY_RUN = {"name": "dry_run", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}}
EVENT_TYPES = {"name": "type", "in": "query", "schema": {"type": "string"}}

# (method, path, summary, parameters, request schema, success status, success schema)
Operation = tuple[str, str, str, list[dict[str, Any]], dict[str, Any] | None, int, dict[str, Any] | None]
OPERATIONS: list[Operation] = [
    ("get", "/healthz", "Process up", [], None, 200, {"type": "object"}),
    ("get", "/api/v1/healthz", "Process up", [], None, 200, {"type": "object"}),
    ("get", "/api/v1/policies", "Policies", [_status(POLICY_STATUSES), LIMIT, CURSOR, *TIME_RANGE], None, 200,
     schemas.page_of(schemas.POLICY)),
    ("post", "/api/v1/policies", "Create a policy", [], schemas.POLICY_CREATE, 201, schemas.MUTATION),
    ("get", "/api/v1/policies/{policy_id}", "One policy (as_of: as it was then)", [POLICY_ID, AS_OF], None, 200,
     schemas.POLICY),
    ("patch", "/api/v1/policies/{policy_id}", "Edit a policy", [POLICY_ID], schemas.POLICY_EDIT, 200,
     schemas.MUTATION),
    ("delete", "/api/v1/policies/{policy_id}", "Delete a policy and its archives (dry_run: what would go)",
     [POLICY_ID, KEEP_FILES, DRY_RUN], None, 200, schemas.MUTATION_OR_PLAN),
    ("post", "/api/v1/policies/{policy_id}/snapshots", "Take a Snapshot", [POLICY_ID], None, 202, schemas.MUTATION),
    ("post", "/api/v1/policies/{policy_id}/stop", "Stop a policy", [POLICY_ID], None, 200, schemas.MUTATION),
    ("post", "/api/v1/policies/{policy_id}/rebuild", "Rebuild a policy", [POLICY_ID], None, 202, schemas.MUTATION),
    ("get", "/api/v1/policies/{policy_id}/events", "Event Log of a policy", [POLICY_ID, AFTER, LIMIT,
     *EVENT_TIME_RANGE], None, 200, schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/backups", "Backup Records", [POLICY_FILTER, _status(BACKUP_STATUSES), LIMIT, CURSOR,
     *TIME_RANGE], None, 200, schemas.page_of(schemas.BACKUP_RECORD)),
    ("get", "/api/v1/backups/{snapshot_id}", "One Backup Record", [SNAPSHOT_ID], None, 200, schemas.BACKUP_RECORD),
    ("delete", "/api/v1/backups/{snapshot_id}", "Delete a snapshot and its archive (dry_run: what would go)",
     [SNAPSHOT_ID, DRY_RUN], None, 200, schemas.MUTATION_OR_PLAN),
    ("get", "/api/v1/backups/{snapshot_id}/log", "Task log of a snapshot", [SNAPSHOT_ID, AFTER, LIMIT], None, 200,
     schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/backups/{snapshot_id}/download", "The archive (S3: 302 to a presigned URL)", [SNAPSHOT_ID],
     None, 200, None),
    ("post", "/api/v1/backups/{snapshot_id}/stop", "Stop a snapshot", [SNAPSHOT_ID], None, 200, schemas.MUTATION),
    ("get", "/api/v1/restores", "Restore Records", [POLICY_FILTER, _status(BACKUP_STATUSES[:-1]), LIMIT, CURSOR,
     *TIME_RANGE], None, 200, schemas.page_of(schemas.RESTORE_RECORD)),
    ("post", "/api/v1/restores", "Start a restore", [], schemas.RESTORE_CREATE, 202, schemas.MUTATION),
    ("get", "/api/v1/restores/{restore_id}", "One Restore Record", [RESTORE_ID], None, 200, schemas.RESTORE_RECORD),
    ("get", "/api/v1/restores/{restore_id}/log", "Task log of a restore", [RESTORE_ID, AFTER, LIMIT], None, 200,
     schemas.page_of(schemas.EVENT)),
    ("post", "/api/v1/restores/{restore_id}/stop", "Stop a restore", [RESTORE_ID], None, 200, schemas.MUTATION),
    ("get", "/api/v1/storages", "Storage locations and their health (check=true: check now)",
     [{"name": "check", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}}], None, 200,
     {"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}),
    ("post", "/api/v1/storages/{storage}/sync", "Import archives the catalog does not know (catalog resync)",
     [{"name": "storage", "in": "path", "required": True, "schema": {"type": "string"}}, DRY_RUN], None, 200,
     schemas.SYNC_REPORT),
    ("post", "/api/v1/retention/run", "One retention pass now (dry_run: what would go)", [DRY_RUN], None, 200,
     schemas.DELETION_PLAN),
    ("get", "/api/v1/events", "Global Event Log", [AFTER, LIMIT, EVENT_TYPES, *EVENT_TIME_RANGE], None, 200,
     schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/stream", "Live record changes (Server-Sent Events; resume with Last-Event-ID)",
     [AFTER, {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0}}], None, 200, None),
    ("get", "/api/v1/openapi.json", "This document", [], None, 200, {"type": "object"}),
]  # fmt: skip

ERRORS = {
    "400": "malformed request",
    "401": "missing or bad bearer token",
    "403": "the token's role may not do this",
    "404": "no such record",
    "409": "the record's state forbids it, or a conflicting write won",
    "410": "the record was deleted, and what was asked of it with it (a deleted snapshot's archive)",
    "413": "request body too large",
    "422": "a field's value is invalid (field names it)",
}


def operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.removeprefix("/api").split("/") if w]
    return "_".join([method, *words]) if words else method


# OpenAPI links: which answer's `id` names the resource of which later operations. They
# document the API's flow, and let schemathesis chain real ids in its stateful run.
_POLICY, _SNAPSHOT, _RESTORE = (
    "/api/v1/policies/{policy_id}",
    "/api/v1/backups/{snapshot_id}",
    "/api/v1/restores/{restore_id}",
)
LINKS: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = {
    ("post", "/api/v1/policies"): ("policy_id", [
        ("get", _POLICY), ("patch", _POLICY), ("delete", _POLICY), ("post", _POLICY + "/snapshots"),
        ("post", _POLICY + "/stop"), ("post", _POLICY + "/rebuild"), ("get", _POLICY + "/events"),
    ]),
    ("post", _POLICY + "/snapshots"): ("snapshot_id", [
        ("get", _SNAPSHOT), ("delete", _SNAPSHOT), ("get", _SNAPSHOT + "/log"), ("post", _SNAPSHOT + "/stop"),
    ]),
    ("post", "/api/v1/restores"): ("restore_id", [
        ("get", _RESTORE), ("get", _RESTORE + "/log"), ("post", _RESTORE + "/stop"),
    ]),
}  # fmt: skip


def _links(method: str, path: str) -> dict[str, Any]:
    if (method, path) not in LINKS:
        return {}
    parameter, targets = LINKS[(method, path)]
    return {
        operation_id(m, p): {
            "operationId": operation_id(m, p),
            "parameters": {parameter: "$response.body#/id"},
        }
        for m, p in targets
    }


def document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, parameters, body, status, response in OPERATIONS:
        links = _links(method, path)
        responses: dict[str, Any] = {
            str(status): {
                "description": "OK",
                **({"content": {"application/json": {"schema": response}}} if response else {}),
                **({"links": links} if links else {}),
            }
        }
        for code, text in ERRORS.items():
            responses[code] = {
                "description": text,
                "content": {"application/json": {"schema": schemas.ERROR}},
            }
        operation: dict[str, Any] = {
            "operationId": operation_id(method, path),
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        }
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if path.startswith("/api/v1/") and path not in ("/api/v1/healthz", "/api/v1/openapi.json"):
            operation["security"] = [{"bearer": []}, {}]
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "snapledger", "version": version},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
