"""The OpenAPI 3.1 document, generated from the request/response schemas in api/schemas.py
and one table of operations; a test checks the table covers every route."""

from __future__ import annotations

from typing import Any

from api import schemas
from api.params import CURSOR_PATTERN, MAX_POSITION
from api.records import BACKUP_STATUSES
from domain.ledger import Catalog
from domain.policy import POLICY_STATUSES
from projections import eventlog

UUID_PARAM = {"type": "string", "format": "uuid"}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
CURSOR = {"name": "cursor", "in": "query", "description": "next_cursor of the previous page",
          "schema": {"type": "string", "pattern": CURSOR_PATTERN}}  # fmt: skip
BOOLEAN = {
    "type": "string",
    "pattern": "^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)$",
}
AFTER = {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}}
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
DRILL_ID = _path("drill_id")
POLICY_FILTER = {"name": "policy_id", "in": "query", "schema": UUID_PARAM}
KEEP_FILES = {"name": "keep_files", "in": "query", "schema": BOOLEAN}
AS_OF = {
    "name": "as_of",
    "in": "query",
    "description": "an ISO-8601 time or an event position: the policy as it was then",
    "schema": {
        "anyOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "string", "format": "date-time"}]
    },
}
DRY_RUN = {"name": "dry_run", "in": "query", "schema": BOOLEAN}
EVENT_TYPES = {  # comma-separated; the parameter may also repeat
    "name": "type", "in": "query", "style": "form", "explode": False,
    "schema": {"type": "array", "minItems": 1, "items": {"enum": sorted(eventlog.EVENT_TYPES)}},
}  # fmt: skip

# (method, path, summary, parameters, request schema, success status, success schema)
Operation = tuple[str, str, str, list[dict[str, Any]], dict[str, Any] | None, int, dict[str, Any] | None]
OPERATIONS: list[Operation] = [
    ("get", "/healthz", "Process up", [], None, 200, schemas.HEALTHZ),
    ("get", "/api/v1/healthz", "Process up", [], None, 200, schemas.HEALTHZ),
    ("get", "/api/v1/policies", "Policies", [_status(POLICY_STATUSES), LIMIT, CURSOR, *TIME_RANGE], None, 200,
     schemas.page_of(schemas.POLICY)),
    ("post", "/api/v1/policies", "Create a policy", [], schemas.POLICY_CREATE, 201, schemas.MUTATION),
    ("get", "/api/v1/policies/{policy_id}", "One policy (as_of: as it was then)", [POLICY_ID, AS_OF], None, 200,
     {"anyOf": [schemas.POLICY, schemas.POLICY_AS_OF]}),
    ("patch", "/api/v1/policies/{policy_id}", "Edit a policy", [POLICY_ID], schemas.POLICY_EDIT, 200,
     schemas.MUTATION),
    ("delete", "/api/v1/policies/{policy_id}", "Delete a policy and its archives", [POLICY_ID, KEEP_FILES], None,
     200, schemas.MUTATION),
    ("get", "/api/v1/policies/{policy_id}/deletion-plan", "What Delete would remove (nothing is written)",
     [POLICY_ID, KEEP_FILES], None, 200, schemas.DELETION_PLAN),
    ("post", "/api/v1/policies/{policy_id}/snapshots", "Take a Snapshot", [POLICY_ID], None, 202, schemas.MUTATION),
    ("post", "/api/v1/policies/{policy_id}/drill", "Drill the newest completed snapshot into a scratch copy",
     [POLICY_ID], schemas.DRILL_CREATE, 202, schemas.MUTATION),
    ("get", "/api/v1/drills/{drill_id}", "One drill and what it proved", [DRILL_ID], None, 200, schemas.DRILL),
    ("post", "/api/v1/policies/{policy_id}/stop", "Stop a policy", [POLICY_ID], None, 200, schemas.MUTATION),
    ("post", "/api/v1/policies/{policy_id}/rebuild", "Rebuild a policy", [POLICY_ID], None, 202, schemas.MUTATION),
    ("get", "/api/v1/policies/{policy_id}/events", "Event Log of a policy", [POLICY_ID, AFTER, LIMIT,
     *EVENT_TIME_RANGE], None, 200, schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/backups", "Backup Records", [POLICY_FILTER, _status(BACKUP_STATUSES), LIMIT, CURSOR,
     *TIME_RANGE], None, 200, schemas.page_of(schemas.BACKUP_RECORD)),
    ("get", "/api/v1/backups/{snapshot_id}", "One Backup Record", [SNAPSHOT_ID], None, 200, schemas.BACKUP_RECORD),
    ("delete", "/api/v1/backups/{snapshot_id}", "Delete a snapshot and its archive", [SNAPSHOT_ID], None, 200,
     schemas.MUTATION),
    ("get", "/api/v1/backups/{snapshot_id}/deletion-plan", "What Delete would remove (nothing is written)",
     [SNAPSHOT_ID], None, 200, schemas.DELETION_PLAN),
    ("get", "/api/v1/backups/{snapshot_id}/log", "Task log of a snapshot", [SNAPSHOT_ID, AFTER, LIMIT], None, 200,
     schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/backups/{snapshot_id}/segments", "Captured change segments after a snapshot",
     [SNAPSHOT_ID, AFTER, LIMIT], None, 200, schemas.page_of(schemas.SEGMENT)),
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
     [{"name": "check", "in": "query", "schema": BOOLEAN}], None, 200,
     schemas.STORAGES),
    ("post", "/api/v1/storages/{storage}/sync", "Import archives the catalog does not know (catalog resync)",
     [{"name": "storage", "in": "path", "required": True, "schema": {"type": "string"}}, DRY_RUN], None, 200,
     schemas.SYNC_REPORT),
    ("post", "/api/v1/retention/run", "One retention pass now (dry_run: what would go)", [DRY_RUN], None, 200,
     schemas.DELETION_PLAN),
    ("get", "/api/v1/events", "Event Log: global, of a policy's cycle (policy_id) or of one task (task_id), "
     "deleted ones included", [AFTER, LIMIT, EVENT_TYPES, *EVENT_TIME_RANGE,
     {"name": "policy_id", "in": "query", "schema": UUID_PARAM},
     {"name": "task_id", "in": "query", "description": "a snapshot or restore id", "schema": UUID_PARAM}],
     None, 200, schemas.page_of(schemas.EVENT)),
    ("get", "/api/v1/stream", "Live record changes (Server-Sent Events; resume with Last-Event-ID)",
     [AFTER, {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0}}], None, 200, None),
    ("get", "/api/v1/openapi.json", "This document", [], None, 200, {"type": "object"}),
]  # fmt: skip

UNAVAILABLE = {
    "description": "the event store or the record views do not answer: retry after Retry-After seconds "
    "(a mutation under the same Idempotency-Key)",
    "headers": {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}},
    "content": {"application/json": {"schema": schemas.ERROR}},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "a retry under the same key answers the first outcome instead of acting twice",
    "schema": {"type": "string", "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"},
}
KEY_HEADER = {
    "Idempotency-Key": {"description": "the request's key (the one given, or one the server chose); "
                        "a dry run records none", "schema": {"type": "string"}}
}  # fmt: skip
NO_DATABASE = ("/healthz", "/api/v1/healthz", "/api/v1/openapi.json")  # answered from memory
ERRORS = {
    "400": "malformed request",
    "401": "missing or bad bearer token",
    "403": "the token's role may not do this",
    "404": "no such record, or it was deleted (the message says so, and where its history is)",
    "409": "the record's state forbids it, or a conflicting write won",
    "413": "request body too large",
    "422": "a field's value is invalid (field names it)",
}


UNKEYED = {  # safe to repeat as they are: they act on what they find
    ("post", "/api/v1/storages/{storage}/sync"),
    ("post", "/api/v1/retention/run"),
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
        ("get", _POLICY + "/deletion-plan"),
    ]),
    ("post", _POLICY + "/snapshots"): ("snapshot_id", [
        ("get", _SNAPSHOT), ("delete", _SNAPSHOT), ("get", _SNAPSHOT + "/log"), ("post", _SNAPSHOT + "/stop"),
        ("get", _SNAPSHOT + "/download"), ("get", _SNAPSHOT + "/deletion-plan"),
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


def _for_catalog(body: dict[str, Any] | None, catalog: Catalog) -> dict[str, Any] | None:
    """Request bodies name this installation's sources, locations and targets: a request
    the document allows is one the server accepts."""
    if body is None:
        return None
    props = dict(body["properties"])
    for name, names in (
        ("source", catalog.sources),
        ("storage", catalog.storages),
        ("target", catalog.targets),
    ):
        if name in props:
            props[name] = {"enum": sorted(names)}
    if "drill" in props:  # a policy's drill names a target too
        drill = props["drill"]
        props["drill"] = {
            **drill,
            "properties": {**drill["properties"], "target": {"enum": sorted(catalog.targets)}},
        }
    out = {**body, "properties": props}
    if "target" in props:  # which `existing` modes each target offers
        out["anyOf"] = [
            {"properties": {"target": {"const": t}, "existing": {"enum": list(choices)}}}
            if (choices := catalog.existing_choices.get(t))
            else {"properties": {"target": {"const": t}}, "not": {"required": ["existing"]}}
            for t in sorted(catalog.targets)
        ] or [{"not": {}}]
    return out


def document(version: str, catalog: Catalog | None = None) -> dict[str, Any]:
    catalog = catalog or Catalog()
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, parameters, raw_body, status, response in OPERATIONS:
        body = _for_catalog(raw_body, catalog)
        links = _links(method, path)
        responses: dict[str, Any] = {
            str(status): {
                "description": "OK",
                **({"content": {"application/json": {"schema": response}}} if response else {}),
                **({"links": links} if links else {}),
            }
        }
        keyed = method in ("post", "patch", "delete") and (method, path) not in UNKEYED
        for code, text in ERRORS.items():
            responses[code] = {
                "description": text,
                "content": {"application/json": {"schema": schemas.ERROR}},
            }
        if path not in NO_DATABASE:
            responses["503"] = UNAVAILABLE
        if keyed:
            parameters = [*parameters, IDEMPOTENCY_KEY]
            for code in (str(status), "503"):
                responses[code] = {
                    **responses[code],
                    "headers": {**responses[code].get("headers", {}), **KEY_HEADER},
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
