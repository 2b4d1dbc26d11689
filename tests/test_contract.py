"""The API contract: a valid OpenAPI 3.1 document covering every route, schemathesis
against it (no 5xx, conforming responses), live updates over SSE, time travel, filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from api.http import ROUTES
from tests.conftest import completed_snapshot, create_policy, wait_for
from tests.reliability.tally import report

API = "/api/v1"


def test_openapi_is_valid_and_covers_every_route(client):
    doc = client.get(f"{API}/openapi.json").json()
    validate(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(r.path, m) for r in ROUTES if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    assert served == documented


@pytest.mark.parametrize("backend", ["sqlite"])  # one event store is enough to fuzz the HTTP layer
def test_schemathesis_finds_no_server_errors(make_config, backend):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi import checks as oc

    from api.http import create_app
    from api.runtime import Runtime

    # The contract this test holds the API to: no 5xx, documented status codes,
    # content types and bodies. (Schema-valid input may still be refused with a 4xx
    # naming the field, e.g. a cursor this API never issued.)
    CHECKS = [  # noqa: N806
        schemathesis.checks.not_a_server_error,
        oc.status_code_conformance,
        oc.content_type_conformance,
        oc.response_schema_conformance,
    ]
    runtime = Runtime.build(make_config()).start(worker=False)
    try:
        app = create_app(runtime, start=False)
        schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", app)
        failures = []
        statuses: list[int] = []
        for operation in schema.get_all_operations():
            op = operation.ok()
            if op.path in ("/api/v1/stream",):
                continue  # an endless stream: covered by the SSE tests below

            @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=op.as_strategy())
            def check(case):  # type: ignore[no-untyped-def]
                response = case.call()
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.text)
                case.validate_response(response, checks=CHECKS)

            try:
                check()
            except Exception as e:  # collect, then report all
                failures.append(f"{op.method.upper()} {op.path}: {e}")
        fuzzed = f"requests={len(statuses)} 5xx={sum(s >= 500 for s in statuses)}"
        report(f"contract: schemathesis {fuzzed} operations={len(list(schema.get_all_operations()))}")
        assert not failures, "\n".join(failures[:5])
    finally:
        runtime.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_schemathesis_stateful_sequences_find_no_server_errors(make_config, backend):
    """Schemathesis chains real ids through the document's links: create a policy, then
    read, edit, snapshot, stop, rebuild or delete it, restore its snapshots and so on,
    in generated orders. Every answer must be documented and none a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis.specs.openapi import checks as oc

    from api.http import create_app
    from api.runtime import Runtime

    runtime = Runtime.build(make_config()).start(worker=False)
    statuses: list[int] = []
    try:
        schema = schemathesis.openapi.from_asgi(f"{API}/openapi.json", create_app(runtime, start=False))
        schema = schema.exclude(path=f"{API}/stream")  # endless: the SSE tests cover it
        base = schema.as_state_machine()

        class Flow(base):  # type: ignore[misc,valid-type]
            def validate_response(self, response, case, additional_checks=None, **kwargs):  # noqa: ANN001
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.text)
                case.validate_response(
                    response,
                    checks=[schemathesis.checks.not_a_server_error, oc.status_code_conformance,
                            oc.response_schema_conformance],
                )  # fmt: skip

        Flow.run(
            settings=settings(
                max_examples=15, stateful_step_count=6, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
            )
        )  # fmt: skip
    finally:
        runtime.close()
    report(f"contract: stateful requests={len(statuses)} 5xx={sum(s >= 500 for s in statuses)}")
    assert len(statuses) >= 30 and sum(200 <= s < 300 for s in statuses) >= 5, statuses


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
