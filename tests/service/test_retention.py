"""Retention with a controllable clock: keep_last, expire_after, and the min-one rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.janitor import expired_snapshots
from tests.support.api import completed_snapshot, create_policy

API = "/api/v1"
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def _rows(*ages_hours: float) -> list[dict]:
    return [
        {"id": f"s{i}", "finished_at": (T0 - timedelta(hours=h)).isoformat()}
        for i, h in enumerate(ages_hours)
    ]


def test_rules():
    rows = _rows(1, 2, 3, 50, 100)  # newest first
    assert expired_snapshots({"keep_last": 2}, rows, T0) == ["s2", "s3", "s4"]
    assert expired_snapshots({"expire_after_seconds": 48 * 3600}, rows, T0) == ["s3", "s4"]
    both = {"keep_last": 4, "expire_after_seconds": 72 * 3600}
    assert expired_snapshots(both, rows, T0) == ["s4"]
    # Never the newest completed snapshot, however old.
    assert expired_snapshots({"expire_after_seconds": 60}, _rows(500), T0) == []
    assert expired_snapshots({"keep_last": 1}, _rows(1, 2), T0) == ["s1"]


def test_janitor_deletes_archives_and_records_reason(client):
    runtime = client.app.state.runtime
    pid = create_policy(client, retention={"keep_last": 2})
    snaps = [completed_snapshot(client, pid) for _ in range(4)]
    root = runtime.config.storages["local"].path
    assert len([p for p in root.rglob("*.tar")]) == 4
    runtime.runner.catch_up()
    from service.janitor import Janitor

    janitor = Janitor(runtime.app, runtime.resources.storages, runtime.retained)
    deleted = janitor.tick(datetime.now(UTC))
    assert sorted(deleted) == sorted(s["id"] for s in snaps[:2])
    assert len([p for p in root.rglob("*.tar")]) == 2
    log = client.get(f"{API}/events", params={"task_id": snaps[0]["id"]}).json()["items"]
    assert log[-1]["type"] == "SnapshotDeleted" and log[-1]["data"]["reason"] == "retention"
    assert log[-1]["actor"] == "system:retention"
    runtime.runner.catch_up()
    assert janitor.tick(datetime.now(UTC)) == []  # idempotent

    # An edit applies to existing snapshots on the next pass, and moves their expiry.
    client.patch(f"{API}/policies/{pid}", json={"retention": {"expire_after": "1h"}})
    kept = client.get(f"{API}/backups/{snaps[3]['id']}").json()
    assert kept["expires_at"] is not None
    runtime.runner.catch_up()
    deleted = janitor.tick(datetime.now(UTC) + timedelta(hours=2))
    assert deleted == [snaps[2]["id"]]  # the newest stays, expired or not
    assert len([p for p in root.rglob("*.tar")]) == 1
