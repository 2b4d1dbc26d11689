"""Restore drills over HTTP and the CLI: asked for, followed to their verdict, and shown on
the policy and in its Event Log."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from api.config import Config
from api.runtime import Runtime
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.cli import NO_SCHEDULER, Cli

API = "/api/v1"


def test_a_drill_over_http_passes_and_shows_on_the_policy(client: TestClient) -> None:
    pid = create_policy(client, name="drilled")
    for body, status, field in [
        ({}, 409, "target"),  # the policy names no drill target
        ({"target": "scratch", "checks": "SELECT 1"}, 422, "checks"),
        ({"target": "scratch", "extra": 1}, 422, "extra"),
        ({"target": "nowhere"}, 422, "target"),
    ]:
        r = client.post(f"{API}/policies/{pid}/drill", json=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)
    r = client.post(f"{API}/policies/{pid}/drill", json={"target": "scratch"})
    assert r.status_code == 409 and "no completed snapshot" in r.json()["error"]
    r = client.post(f"{API}/policies/{pid}/drill", json={"target": "scratch", "checks": ["SELECT true"]})
    assert (
        r.status_code == 409 and r.json()["field"] == "checks" and "'scratch' is ndjson" in r.json()["error"]
    )
    snap = completed_snapshot(client, pid)
    r = client.post(f"{API}/policies/{pid}/drill", json={"target": "scratch"})
    assert r.status_code == 202, r.text
    drill = wait_for(
        client, f"{API}/drills/{r.json()['id']}", lambda d: d["status"] in ("passed", "failed"), 60
    )
    assert drill["status"] == "passed", drill
    assert drill["snapshot_id"] == snap["id"] and drill["rto_seconds"] > 0
    assert all(c["ok"] for c in drill["result"]["collections"].values())
    policy = wait_for(
        client, f"{API}/policies/{pid}", lambda p: (p["last_drill"] or {}).get("status") == "passed"
    )
    assert policy["last_drill"]["drill_id"] == drill["id"] and policy["verified_restorable_at"]
    backup = wait_for(client, f"{API}/backups/{snap['id']}", lambda b: b["last_drill"] is not None)
    assert backup["last_drill"]["status"] == "passed" and backup["last_drill"]["drill_id"] == drill["id"]
    metrics = client.get("/metrics").text
    assert f'snapledger_drill_passed{{policy="drilled",policy_id="{pid}"}} 1' in metrics
    assert f'snapledger_drill_rto_seconds{{policy="drilled",policy_id="{pid}"}}' in metrics
    assert (
        f'snapledger_policy_verified_restorable_timestamp_seconds{{policy="drilled",policy_id="{pid}"}}'
        in metrics
    )
    events = client.get(f"{API}/policies/{pid}/events").json()["items"]
    assert any(e["message"].startswith("restore drill passed") for e in events)
    assert client.get(f"{API}/drills/00000000-0000-4000-8000-000000000000").status_code == 404


@pytest.fixture
def cli(make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(make_config(NO_SCHEDULER), capsys)


@pytest.fixture
def worker(cli: Cli) -> Iterator[Runtime]:
    runtime = Runtime.build(cli.config).start(worker=True)
    yield runtime
    runtime.close()


def test_policy_drill_on_the_cli_waits_for_its_verdict(cli: Cli, worker: Runtime) -> None:
    cli.ok("policy", "create", "nightly", "--source", "demo", "--storage", "local")
    cli.ok("snapshot", "take", "nightly", "--wait")
    out = cli.ok("policy", "drill", "nightly", "--target", "scratch", "--wait")
    assert "passed:" in out and "rows equal to the archive" in out
    code, _, err = cli("policy", "drill", "nightly")  # no target given, and the policy names none
    assert code == 2 and "has no drill target: give one" in err
    code, _, err = cli("policy", "drill", "nightly", "--target", "nowhere")
    assert code == 2 and "unknown drill target 'nowhere'" in err


def test_a_policys_drill_setting_is_what_a_drill_takes_by_default(client: TestClient) -> None:
    for drill, field in [
        ({"schedule": "0 4 * * *"}, "drill.target"),
        ({"target": "nowhere"}, "drill.target"),
        ({"target": "scratch", "schedule": "every day"}, "drill.schedule"),
        ({"target": "scratch", "checks": [" "]}, "drill.checks.0"),
        ({"target": "scratch", "when": "now"}, "drill.when"),
    ]:
        r = client.post(
            f"{API}/policies", json={"name": "d", "source": "demo", "storage": "local", "drill": drill}
        )
        assert (r.status_code, r.json()["field"]) == (422, field), (drill, r.text)
    body = {
        "name": "d",
        "source": "demo",
        "storage": "local",
        "drill": {"target": "scratch", "checks": ["SELECT 1"]},
    }
    refused = client.post(f"{API}/policies", json=body)
    assert refused.status_code == 409 and refused.json()["field"] == "drill.checks"  # SQL on an NDJSON target
    pid = create_policy(client, name="set", drill={"target": "scratch", "schedule": "0 4 * * *"})
    policy = client.get(f"{API}/policies/{pid}").json()
    assert policy["drill"] == {"target": "scratch", "schedule": "0 4 * * *", "checks": []}
    completed_snapshot(client, pid)
    r = client.post(f"{API}/policies/{pid}/drill", json={})
    assert r.status_code == 202, r.text
    drill = wait_for(
        client, f"{API}/drills/{r.json()['id']}", lambda d: d["status"] in ("passed", "failed"), 60
    )
    assert drill["status"] == "passed" and drill["target"] == "scratch"
    r = client.patch(f"{API}/policies/{pid}", json={"drill": None})
    assert r.status_code == 200 and client.get(f"{API}/policies/{pid}").json()["drill"] is None
    r = client.post(f"{API}/policies/{pid}/drill", json={})
    assert r.status_code == 409 and r.json()["field"] == "target"


def test_a_drill_schedule_drills_once_per_slot(client: TestClient) -> None:
    from datetime import datetime, timedelta

    from service.scheduler import Scheduler

    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    # A yearly slot, ticked at by hand: this client's own scheduler never reaches it meanwhile.
    pid = create_policy(client, name="yearly", drill={"target": "scratch", "schedule": "0 0 1 1 *"})
    r = client.post(f"{API}/policies/{pid}/drill", json={})
    assert r.status_code == 409  # nothing to drill yet
    completed_snapshot(client, pid)
    scheduler = Scheduler(runtime.app, runtime.due_policies, runtime.due_drills)
    policy = wait_for(client, f"{API}/policies/{pid}", lambda p: p["next_drill_at"] is not None)
    now = datetime.fromisoformat(policy["next_drill_at"]) + timedelta(seconds=5)
    first = scheduler.tick(now)
    assert len(first) == 1 and scheduler.tick(now) == []  # one drill per slot, however many ticks
    drill = runtime.app.get_drill(first[0].id)
    assert drill.slot is not None and drill.slot <= now and drill.target == "scratch"
    assert (
        Scheduler(runtime.app, runtime.due_policies, runtime.due_drills).tick(now) == []
    )  # another scheduler
    runtime.nudge_worker()
    done = wait_for(client, f"{API}/drills/{drill.id}", lambda d: d["status"] in ("passed", "failed"), 60)
    assert done["status"] == "passed"
    moved = wait_for(client, f"{API}/policies/{pid}", lambda p: p["next_drill_at"] != policy["next_drill_at"])
    assert datetime.fromisoformat(moved["next_drill_at"]) == drill.slot.replace(year=drill.slot.year + 1)
