"""Metrics (Prometheus text format) and readiness, computed on request from the views.

Nothing is counted in memory: every number is read from the record views and the event
store at scrape time, so every process answers the same and a restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from api.availability import DatabaseUnavailable, attempt
from api.logs import redact
from api.records import BACKUP_STATUSES
from api.runtime import Runtime
from domain.run import RESTORE_STATUSES as RESTORE_STATUS_NAMES
from projections.db import Cursor
from projections.views import iso

log = logging.getLogger("snapledger.observability")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
MAX_READY_LAG = 1000  # positions the views may trail the event store and still take traffic
SNAPSHOT_STATUSES = BACKUP_STATUSES
RESTORE_STATUSES = RESTORE_STATUS_NAMES

# A snapshot deleted after it completed keeps its sha256: its items, bytes and duration stay
# counted, so the counters never go down when retention deletes old snapshots.
SNAPSHOT_COMPLETED = "status = 'completed' OR (status = 'deleted' AND sha256 IS NOT NULL)"
RESTORE_COMPLETED = "status = 'completed'"


# ----------------------------------------------------------------- exposition
def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its HELP and TYPE lines and its samples."""

    name: str
    kind: str  # gauge, counter, histogram
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> Family:
        self.samples.append((self.name + suffix, labels, value))
        return self

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for name, labels, value in self.samples:
            inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            yield f"{name}{{{inner}}} {format_value(value)}" if inner else f"{name} {format_value(value)}"


def render(families: Iterable[Family]) -> str:
    return "".join(line + "\n" for family in families for line in family.lines())


# -------------------------------------------------------------------- metrics
def _num(value: Any) -> float:
    """PostgreSQL sums are Decimal and empty sums NULL; both become floats."""
    return float(value) if value is not None else 0.0


def _status_family(cur: Cursor, table: str, name: str, what: str, known: tuple[str, ...]) -> Family:
    cur.execute(f"SELECT status, COUNT(*) AS n FROM {table} GROUP BY status")
    counts = {status: 0.0 for status in known}
    counts.update({r["status"]: _num(r["n"]) for r in cur.fetchall()})
    family = Family(name, "gauge", f"{what} records by status (every known status, zero included).")
    for status, n in counts.items():
        family.add(n, status=status)
    return family


def _run_families(cur: Cursor, table: str, kind: str, completed: str) -> list[Family]:
    """Items, bytes and the duration histogram of completed runs, in one aggregate query."""
    elapsed = "COALESCE(elapsed_seconds, 0)"
    buckets = ", ".join(
        f"SUM(CASE WHEN {elapsed} <= {b} THEN 1 ELSE 0 END) AS le_{i}" for i, b in enumerate(DURATION_BUCKETS)
    )
    cur.execute(
        f"SELECT COUNT(*) AS n, SUM(items) AS items, SUM(transferred_bytes) AS bytes, "
        f"SUM({elapsed}) AS seconds, {buckets} FROM {table} WHERE {completed}"
    )
    row = cur.fetchone() or {}
    plural = f"{kind}s"
    hist = Family(
        f"snapledger_{kind}_duration_seconds",
        "histogram",
        f"Run time of completed {plural} (elapsed_seconds).",
    )
    for i, bound in enumerate(DURATION_BUCKETS):
        hist.add(_num(row.get(f"le_{i}")), "_bucket", le=format_value(bound))
    hist.add(_num(row.get("n")), "_bucket", le="+Inf")
    hist.add(_num(row.get("seconds")), "_sum").add(_num(row.get("n")), "_count")
    return [
        Family(
            f"snapledger_{kind}_items_total", "counter", f"Items (documents) moved by completed {plural}."
        ).add(_num(row.get("items"))),
        Family(
            f"snapledger_{kind}_transferred_bytes_total",
            "counter",
            f"Archive bytes moved by completed {plural}.",
        ).add(_num(row.get("bytes"))),
        hist,
    ]


def _timestamp(value: str) -> float:
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _drill_families(cur: Cursor) -> list[Family]:
    """Restore drills: whether each policy's last drill passed, its time to restore, and
    when a drill last proved the policy's snapshots restore."""
    passed = Family(
        "snapledger_drill_passed",
        "gauge",
        "1 when the policy's last finished drill passed, 0 when it failed.",
    )
    rto = Family(
        "snapledger_drill_rto_seconds", "gauge", "Time to restore measured by the policy's last drill."
    )
    verified = Family(
        "snapledger_policy_verified_restorable_timestamp_seconds", "gauge",
        "Unix time of the last drill that passed, per policy.",
    )  # fmt: skip
    cur.execute(
        "SELECT id, name, last_drill, verified_restorable_at FROM policies "
        "WHERE status != 'deleted' AND last_drill IS NOT NULL ORDER BY name, id"
    )
    for r in cur.fetchall():
        last = json.loads(r["last_drill"])
        labels = {"policy": r["name"], "policy_id": r["id"]}
        if last["status"] in ("passed", "failed"):
            passed.add(1 if last["status"] == "passed" else 0, **labels)
        if last.get("rto_seconds") is not None:
            rto.add(float(last["rto_seconds"]), **labels)
        if r["verified_restorable_at"]:
            verified.add(_timestamp(r["verified_restorable_at"]), **labels)
    return [passed, rto, verified]


def _capture_families(cur: Cursor, runtime: Runtime) -> list[Family]:
    """Continuous capture: how far each policy is restorable, how far behind now, and (where
    this process runs the capture) the WAL its slot keeps on the source and any alarm."""
    until = Family(
        "snapledger_capture_restorable_until_timestamp_seconds", "gauge",
        "Unix time up to which each policy's newest capture window can be restored.",
    )  # fmt: skip
    lag = Family(
        "snapledger_capture_lag_seconds", "gauge", "Now minus restorable_until, per capturing policy."
    )
    cur.execute("SELECT id, name, capture FROM policies WHERE capture IS NOT NULL ORDER BY name, id")
    now = datetime.now(UTC).timestamp()
    for r in cur.fetchall():
        window = json.loads(r["capture"])
        if window.get("restorable_until") and window["status"] == "capturing":
            at = _timestamp(window["restorable_until"])
            until.add(at, policy=r["name"], policy_id=r["id"])
            lag.add(max(0.0, now - at), policy=r["name"], policy_id=r["id"])
    retained = Family(
        "snapledger_capture_retained_wal_bytes", "gauge",
        "WAL the source keeps for each capture slot this process streams (max_slot_wal_mb ends it).",
    )  # fmt: skip
    alarm = Family(
        "snapledger_capture_alarm", "gauge", "1 while a capture is not keeping up or cannot archive."
    )
    loop = getattr(runtime, "captures", None)
    for seen in loop.last.values() if loop is not None else []:
        labels = {"policy": seen["policy"], "policy_id": seen["policy_id"], "slot": seen["slot"]}
        if seen["retained_wal_bytes"] is not None:
            retained.add(seen["retained_wal_bytes"], **labels)
        alarm.add(1 if seen["alarm"] else 0, **labels)
    return [until, lag, retained, alarm]


def collect(runtime: Runtime) -> list[Family]:
    """Blocking: reads the event store and the views (call it off the event loop)."""
    position = runtime.app.recorder.max_notification_id() or 0
    view_positions = runtime.runner.positions()
    families: list[Family] = []
    with runtime.views.transaction() as cur:
        families.append(
            _status_family(cur, "backup_records", "snapledger_snapshots", "Backup", SNAPSHOT_STATUSES)
        )
        families.append(
            _status_family(cur, "restore_records", "snapledger_restores", "Restore", RESTORE_STATUSES)
        )
        families += _run_families(cur, "backup_records", "snapshot", SNAPSHOT_COMPLETED)
        families += _run_families(cur, "restore_records", "restore", RESTORE_COMPLETED)
        cur.execute(
            "SELECT id, name, last_success_at FROM policies "
            "WHERE status != 'deleted' AND last_success_at IS NOT NULL ORDER BY name, id"
        )
        last_success = Family(
            "snapledger_policy_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last completed snapshot of each live policy.",
        )
        for r in cur.fetchall():
            last_success.add(_timestamp(r["last_success_at"]), policy=r["name"], policy_id=r["id"])
        families.append(last_success)
        families += _capture_families(cur, runtime)
        families += _drill_families(cur)
        # A task whose lease lapsed has no live holder: its worker is gone or frozen.
        cur.execute(
            "SELECT DISTINCT worker FROM task_queue WHERE status = 'running' AND worker IS NOT NULL "
            "AND lease_expires_at >= %(now)s",
            {"now": iso(datetime.now(UTC))},
        )
        workers = {r["worker"] for r in cur.fetchall()}
    if runtime.worker is not None:
        workers.add(runtime.worker.worker_id)
    views_position = min(view_positions.values(), default=0)
    view_family = Family("snapledger_view_position", "gauge", "Event store position each view has applied.")
    for view, at in sorted(view_positions.items()):
        view_family.add(at, view=view)
    families += [
        Family(
            "snapledger_projection_lag_positions",
            "gauge",
            "Event store position minus the position every view has applied.",
        ).add(max(0, position - views_position)),
        view_family,
        Family("snapledger_event_store_position", "gauge", "Highest position in the event store.").add(
            position
        ),
        Family(
            "snapledger_workers",
            "gauge",
            "Workers holding a live lease on a running task, plus this process's worker.",
        ).add(len(workers)),
    ]
    return families


def _describe(runtime: Runtime, exc: BaseException) -> str:
    """A one-line reason for an operator, with configured secrets removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, runtime.config.secrets)


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        families = await attempt(runtime.watch, collect, runtime)
    except Exception as e:  # an unreachable database: the scrape fails visibly, not with a 500
        reason = _describe(runtime, e)
        log.warning("metrics unavailable: %s", reason)
        return PlainTextResponse(
            f"metrics unavailable: {reason}\n", status_code=503, headers={"Retry-After": "2"}
        )
    return Response(render(families), media_type=CONTENT_TYPE)


# ------------------------------------------------------------------ readiness
def readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """Ready when the event store and the views answer and the views are nearly current."""
    if not runtime.watch.up:
        reason = f"event store: the database does not answer ({runtime.watch.reason})"
        return 503, _not_ready("event_store", reason)
    try:
        position = runtime.app.recorder.max_notification_id() or 0
    except Exception as e:
        return 503, _not_ready("event_store", f"event store: {_describe(runtime, e)}")
    try:
        runtime.views.query("SELECT 1 AS ok")
        views_position = runtime.runner.position()
    except Exception as e:
        return 503, _not_ready("views", f"views: {_describe(runtime, e)}")
    state = {"position": position, "views_position": views_position, "lag": max(0, position - views_position)}
    if state["lag"] > MAX_READY_LAG:
        reason = f"views lag {state['lag']} positions behind the event store (bound {MAX_READY_LAG})"
        return 503, {**_not_ready("lag", reason), **state}
    return 200, {"status": "ready", **state}


def _not_ready(check: str, reason: str) -> dict[str, Any]:
    return {"status": "not ready", "check": check, "reason": reason}


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        status, body = await attempt(runtime.watch, readiness, runtime)
    except DatabaseUnavailable as e:
        status, body = 503, _not_ready("event_store", f"event store: {e}")
    except Exception as e:  # belt and braces: a probe answers 503, never 500
        status, body = 503, _not_ready("unknown", _describe(runtime, e))
    if status != 200:
        log.warning("not ready: %s", body["reason"])
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = "2"
    return JSONResponse(body, status_code=status, headers=headers)


ROUTES: list[Route] = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
