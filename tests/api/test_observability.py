"""What an operator's monitoring relies on: /metrics moves with real runs and parses as
Prometheus text, /readyz says 503 with a reason instead of failing, logs are JSON lines
that never carry a secret."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from api.http import create_app
from api.logs import bind, setup_logging
from api.observability import DURATION_BUCKETS, MAX_READY_LAG, Family, escape_label, render
from api.runtime import Runtime
from tests.support.api import SECRET, completed_snapshot, create_policy, wait_for

# ------------------------------------------------------- a small exposition parser
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}

Key = tuple[str, tuple[tuple[str, str], ...]]


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    at = 0
    while at < len(text):
        m = _LABEL.match(text, at)
        assert m, f"bad label set at {text[at:]!r}"
        assert m.group(1) not in labels, f"label {m.group(1)} repeated"
        labels[m.group(1)] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        at = m.end()
    return labels


def parse(text: str) -> dict[Key, float]:
    """Checks the text format line by line; answers {(name, sorted labels): value}."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[Key, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP {name} repeated"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in _SUFFIXES and name not in types and name in helps
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, raw_labels, raw_value = m.groups()
            family = next(
                (f for f, k in types.items() for s in _SUFFIXES[k] if name == f + s), None
            )  # a sample follows the TYPE line of its family
            assert family is not None, f"{name} has no TYPE line before it"
            key = (name, tuple(sorted(_labels(raw_labels or "").items())))
            assert key not in samples, f"series {key} repeated"
            samples[key] = float(raw_value)
    return samples


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(client: TestClient) -> dict[Key, float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def caught_up(client: TestClient) -> None:
    runtime: Runtime = client.app.state.runtime
    assert runtime.runner.wait(runtime.app.recorder.max_notification_id() or 0, 10)


# -------------------------------------------------------------------- metrics
def test_metrics_move_with_a_backup_and_a_restore(client):
    before = scrape(client)
    assert value(before, "snapledger_snapshots", status="completed") == 0
    assert value(before, "snapledger_snapshot_duration_seconds_count") == 0
    assert value(before, "snapledger_snapshot_items_total") == 0
    assert value(before, "snapledger_restores", status="completed") == 0
    assert not [k for k in before if k[0] == "snapledger_policy_last_success_timestamp_seconds"]

    started = time.time()
    pid = create_policy(client, name="db-prod.nightly_v2")
    snap = completed_snapshot(client, pid)
    assert snap["status"] == "completed", snap["error"]
    r = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    rec = wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))
    assert rec["status"] == "completed", rec["error"]
    caught_up(client)

    after = scrape(client)
    assert value(after, "snapledger_snapshots", status="completed") == 1
    assert value(after, "snapledger_snapshots", status="failed") == 0
    assert value(after, "snapledger_snapshot_items_total") == snap["items"] == 3650
    assert value(after, "snapledger_snapshot_transferred_bytes_total") == snap["transferred_bytes"] > 0
    assert value(after, "snapledger_restores", status="completed") == 1
    assert value(after, "snapledger_restore_items_total") == 3650
    assert value(after, "snapledger_restore_transferred_bytes_total") > 0
    for kind, elapsed in (("snapshot", snap["elapsed_seconds"]), ("restore", rec["elapsed_seconds"])):
        name = f"snapledger_{kind}_duration_seconds"
        buckets = [value(after, name + "_bucket", le=str(int(b))) for b in DURATION_BUCKETS]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets == [1 if elapsed <= b else 0 for b in DURATION_BUCKETS]
        assert value(after, name + "_bucket", le="+Inf") == value(after, name + "_count") == 1
        assert value(after, name + "_sum") == pytest.approx(elapsed)
    last = value(
        after, "snapledger_policy_last_success_timestamp_seconds", policy="db-prod.nightly_v2", policy_id=pid
    )
    assert started - 1 <= last <= time.time() + 1
    runtime: Runtime = client.app.state.runtime
    assert value(after, "snapledger_projection_lag_positions") == 0
    assert value(after, "snapledger_event_store_position") == runtime.app.recorder.max_notification_id()
    assert (
        value(after, "snapledger_view_position", view="backups") == runtime.app.recorder.max_notification_id()
    )
    assert value(after, "snapledger_workers") == 1  # this process's worker; it holds no task now

    # Retention or an operator deletes the snapshot: the gauge moves, the counters do not go back.
    assert client.delete(f"/api/v1/backups/{snap['id']}").status_code == 200
    caught_up(client)
    deleted = scrape(client)
    assert value(deleted, "snapledger_snapshots", status="completed") == 0
    assert value(deleted, "snapledger_snapshots", status="deleted") == 1
    assert value(deleted, "snapledger_snapshot_items_total") == 3650
    assert value(deleted, "snapledger_snapshot_duration_seconds_count") == 1


def test_failed_run_is_counted_apart(make_config, client_for, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "things.ndjson").write_text('{"_id": 1}\n')
    client = client_for(make_config(extra=f'[sources.gone]\nkind = "ndjson"\npath = "{gone}"\n'))
    shutil.rmtree(gone)
    pid = create_policy(client, name="gone", source="gone")
    snap = completed_snapshot(client, pid)
    assert snap["status"] == "failed" and snap["error"]
    caught_up(client)
    samples = scrape(client)  # the error text (quotes and all) never breaks the exposition
    assert value(samples, "snapledger_snapshots", status="failed") == 1
    assert value(samples, "snapledger_snapshots", status="completed") == 0
    assert value(samples, "snapledger_snapshot_duration_seconds_count") == 0
    assert not [k for k in samples if k[0] == "snapledger_policy_last_success_timestamp_seconds"]


def test_workers_holding_leases(make_config):
    """A worker elsewhere holding a live lease counts; this process runs no worker."""
    config = make_config()
    with TestClient(create_app(Runtime.build(config), worker=False)) as client:
        runtime: Runtime = client.app.state.runtime
        assert value(scrape(client), "snapledger_workers") == 0
        pid = create_policy(client)
        first = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
        assert runtime.app.claim_run("snapshot", first, "elsewhere:42", 600, datetime.now(UTC))
        caught_up(client)
        assert value(scrape(client), "snapledger_workers") == 1
        # Another worker claims a run with a short lease and freezes: a lapsed lease holds nothing.
        pid2 = create_policy(client, name="other")
        second = client.post(f"/api/v1/policies/{pid2}/snapshots").json()["id"]
        lapses = time.monotonic() + 3
        assert runtime.app.claim_run("snapshot", second, "frozen:7", 3, datetime.now(UTC))
        caught_up(client)
        assert value(scrape(client), "snapledger_workers") == 2
        time.sleep(max(0.0, lapses - time.monotonic()) + 0.2)
        assert value(scrape(client), "snapledger_workers") == 1


def test_exposition_escapes_labels():
    tricky = 'say "hi" \\ to\nall'
    assert escape_label(tricky) == 'say \\"hi\\" \\\\ to\\nall'
    text = render(
        [
            Family("snapledger_x", "gauge", "Help with a \\ backslash\nand a newline.")
            .add(1.5, policy=tricky, policy_id="p")
            .add(2, policy="plain-name.v2_x", policy_id="q")
        ]
    )
    assert "# HELP snapledger_x Help with a \\\\ backslash\\nand a newline.\n" in text
    samples = parse(text)
    assert value(samples, "snapledger_x", policy=tricky, policy_id="p") == 1.5
    assert value(samples, "snapledger_x", policy="plain-name.v2_x", policy_id="q") == 2


def test_metrics_unavailable_is_503_not_500(client, monkeypatch):
    runtime: Runtime = client.app.state.runtime

    def unreachable(*args, **kwargs):
        raise OSError(f'server "views-db" refused password {SECRET}')

    with monkeypatch.context() as m:
        m.setattr(runtime.views, "query", unreachable)
        r = client.get("/metrics")
    assert r.status_code == 503
    assert '"views-db"' in r.text and SECRET not in r.text


# ------------------------------------------------------------------ readiness
def test_readyz(client, monkeypatch):
    runtime: Runtime = client.app.state.runtime
    create_policy(client)
    caught_up(client)
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["lag"] == 0 and body["position"] > 0

    def unreachable(*args, **kwargs):
        raise OSError(f'database "views" is closed (password {SECRET})')

    with monkeypatch.context() as m:
        m.setattr(runtime.views, "query", unreachable)
        r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready" and body["check"] == "views"
    assert 'database "views" is closed' in body["reason"] and SECRET not in body["reason"]

    with monkeypatch.context() as m:
        m.setattr(runtime.app.recorder, "max_notification_id", unreachable)
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["check"] == "event_store"
    assert r.json()["reason"].startswith("event store: OSError")

    at = runtime.runner.position()
    with monkeypatch.context() as m:
        m.setattr(runtime.app.recorder, "max_notification_id", lambda: at + MAX_READY_LAG)
        assert client.get("/readyz").status_code == 200  # at the bound: still ready
        m.setattr(runtime.app.recorder, "max_notification_id", lambda: at + MAX_READY_LAG + 1)
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["check"] == "lag" and r.json()["lag"] == MAX_READY_LAG + 1
    assert client.get("/readyz").status_code == 200


# -------------------------------------------------------------------- logging
@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """setup_logging changes the root logger; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_lines_with_fields_and_no_secret(root_logging):
    stream = io.StringIO()
    setup_logging(secrets=[SECRET, ""], stream=stream)
    log = logging.getLogger("snapledger.worker")
    log.info("connecting with %s", SECRET, extra={"snapshot_id": "s-1", "task_name": "ddt-backup-1"})
    run = bind(log, restore_id="r-1", policy_id="p-1")
    run.warning('target said "no"', extra={"task_name": "ddt-restore-1"})
    try:
        raise RuntimeError(f"password {SECRET} rejected")
    except RuntimeError:
        log.exception("run failed", extra={"detail": {"dsn": f"pg://u:{SECRET}@h/db"}})

    raw = stream.getvalue()
    assert SECRET not in raw
    first, second, third = (json.loads(line) for line in raw.splitlines())
    assert first["message"] == "connecting with ***"
    assert first["level"] == "INFO" and first["logger"] == "snapledger.worker"
    assert first["snapshot_id"] == "s-1" and first["task_name"] == "ddt-backup-1"
    assert datetime.fromisoformat(first["time"]).utcoffset() == timedelta(0)
    assert second["message"] == 'target said "no"' and second["level"] == "WARNING"
    assert second["restore_id"] == "r-1" and second["policy_id"] == "p-1"
    assert second["task_name"] == "ddt-restore-1"  # call-site extra adds to bound fields
    assert third["error"].startswith("Traceback") and "RuntimeError: password *** rejected" in third["error"]
    assert "***" in third["detail"]


def test_setup_is_idempotent_and_text_on_a_terminal(root_logging):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    first, second = io.StringIO(), Terminal()
    setup_logging(stream=first)
    setup_logging(stream=second)
    ours = [h for h in root_logging.handlers if type(h).__module__ == "api.logs"]
    assert len(ours) == 1
    logging.getLogger("snapledger.api").info("hello", extra={"snapshot_id": "s-1"})
    assert first.getvalue() == ""
    line = second.getvalue().strip()
    assert line.endswith("INFO snapledger.api: hello [snapshot_id=s-1]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
