"""The API contract: a valid OpenAPI 3.1 document covering every route, schemathesis
against it (no 5xx, conforming responses), live updates over SSE, time travel, filters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from api.http import ROUTES
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.servers import serving
from tests.support.tally import report

API = "/api/v1"


def test_openapi_is_valid_and_covers_every_route(client):
    doc = client.get(f"{API}/openapi.json").json()
    validate(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(r.path, m) for r in ROUTES if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    assert served == documented


FUZZ_SEED = os.environ.get("SNAPLEDGER_FUZZ_SEED", "20261201")  # fixed in CI; vary it to explore


@pytest.mark.parametrize("backend", ["sqlite"])  # one event store is enough to fuzz the HTTP layer
def test_schemathesis_with_every_check_finds_nothing(make_config, backend, tmp_path):
    """Schemathesis's own runner, as an outside client would use it, against a real `serve`:
    every check (server errors, documented statuses, headers and bodies, valid requests
    accepted and invalid ones refused, undeclared methods, use after delete), every phase
    (examples, coverage, fuzzing, and stateful sequences that chain real ids through the
    document's links). Any failure fails the test with schemathesis's report."""
    make_config()
    with serving(tmp_path / "snapledger.toml", tmp_path / "serve.log") as base:
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}{API}/openapi.json",
             "--checks", "all", "--exclude-path", f"{API}/stream", "--max-examples", "25",
             "--seed", FUZZ_SEED, "-H", "X-Snapledger-Actor: fuzz", "--no-color"],
            capture_output=True, text=True, timeout=480, cwd=tmp_path,
        )  # fmt: skip
    out = run.stdout + run.stderr
    counts = re.search(r"(\d+) generated, (\d+) (?:passed|found)", out)
    operations = re.search(r"Tested: (\d+)", out)
    requests = counts.group(1) if counts else "?"
    report(
        f"contract: schemathesis (all checks, seed {FUZZ_SEED}) requests={requests} "
        f"operations={operations.group(1) if operations else '?'} exit={run.returncode}"
    )
    assert run.returncode == 0, out[-6000:]
    assert counts and int(counts.group(1)) >= 500, out[-2000:]


def _sse_events(client, path: str, headers: dict | None = None) -> list[dict]:
    events, current = [], {}
    with client.stream("GET", path, headers=headers or {}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
    return events


def test_stream_delivers_progress_and_resumes(make_config, client_for, big_source):
    client = client_for(make_config(extra=f'[sources.big]\npath = "{big_source}"\n'))
    pid = create_policy(client, name="big", source="big")
    sid = client.post(f"{API}/policies/{pid}/snapshots").json()["id"]
    wait_for(client, f"{API}/backups/{sid}", lambda b: b["status"] == "running")
    events = _sse_events(client, f"{API}/stream?timeout=2.5")
    mine = [
        json.loads(e["data"]) for e in events if e["event"] == "backup" and json.loads(e["data"])["id"] == sid
    ]
    assert len(mine) >= 2, "a running snapshot shows up at least once a second"
    assert any(0 < m["progress"] < 100 or m["status"] == "completed" for m in mine)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    wait_for(client, f"{API}/backups/{sid}", lambda b: b["status"] == "completed", timeout=60)
    mark = ids[0]  # resume from the first event seen: only what came after it is sent again
    resumed = _sse_events(client, f"{API}/stream?timeout=0.5", {"Last-Event-ID": str(mark)})
    assert resumed and all(int(e["id"]) > mark for e in resumed)
    done = [json.loads(e["data"]) for e in resumed if e["event"] == "backup"]
    assert done[-1]["status"] == "completed"
    assert client.get(f"{API}/stream?after=x").status_code == 422


def test_policy_as_of(client):
    pid = create_policy(client, schedule="@daily")
    first = client.get(f"{API}/policies/{pid}/events").json()["items"][0]
    client.patch(f"{API}/policies/{pid}", json={"schedule": "@hourly", "name": "renamed"})
    client.post(f"{API}/policies/{pid}/stop")
    then = client.get(f"{API}/policies/{pid}?as_of={first['position']}").json()
    assert (then["name"], then["schedule"], then["status"]) == ("nightly", "@daily", "active")
    by_time = client.get(f"{API}/policies/{pid}", params={"as_of": first["time"]}).json()
    assert by_time["name"] == "nightly"
    now = client.get(f"{API}/policies/{pid}", params={"as_of": datetime.now(UTC).isoformat()}).json()
    assert (now["name"], now["status"]) == ("renamed", "stopped")
    assert client.get(f"{API}/policies/{pid}?as_of=1999-01-01T00:00:00Z").status_code == 404
    assert client.get(f"{API}/policies/{pid}?as_of=yesterday").json()["field"] == "as_of"


def test_time_range_filters(client):
    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    created = datetime.fromisoformat(snap["created_at"])
    before = (created - timedelta(seconds=1)).isoformat()
    after = (created + timedelta(seconds=1)).isoformat()
    assert [
        r["id"] for r in client.get(f"{API}/backups", params={"created_after": before}).json()["items"]
    ] == [snap["id"]]
    assert client.get(f"{API}/backups", params={"created_after": after}).json()["items"] == []
    assert client.get(f"{API}/backups", params={"created_before": before}).json()["items"] == []
    assert client.get(f"{API}/backups?created_after=soon").json()["field"] == "created_after"
    events = client.get(f"{API}/events", params={"since": after}).json()["items"]
    assert all(e["time"] >= after for e in events)
    assert client.get(f"{API}/events", params={"until": before}).json()["items"] == []
