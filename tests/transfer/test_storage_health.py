"""Storage health and pace: a run on an unusable location fails at once with the reason,
the health shows with the policy and the location; running records show rate and ETA."""

from __future__ import annotations

import time

from tests.support.api import create_policy, wait_for


def test_unusable_storage_fails_the_run_at_once_with_the_reason(make_config, client_for, tmp_path):
    (tmp_path / "blocker").write_text("a file where the archive directory should be")
    config = make_config(storages=f'[storages.broken]\nurl = "{tmp_path}/blocker/archives"\n')
    client = client_for(config)
    pid = create_policy(client, storage="broken")
    started = time.monotonic()
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    rec = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] in ("completed", "failed"))
    assert rec["status"] == "failed"
    assert "storage 'broken' is not usable" in rec["error"] and "NotADirectoryError" in rec["error"]
    assert time.monotonic() - started < 10

    policy = client.get(f"/api/v1/policies/{pid}").json()
    assert policy["storage_health"]["ok"] is False and policy["storage_health"]["error"]
    listed = {s["name"]: s for s in client.get("/api/v1/storages?check=true").json()["items"]}
    assert listed["broken"]["health"]["ok"] is False
    assert listed["local"]["health"]["ok"] is True and listed["local"]["kind"] == "local"
    assert not list(config.storages["local"].path.rglob(".snapledger-probe/*")), "probes are removed"
    healthy = create_policy(client, name="fine")
    assert client.get(f"/api/v1/policies/{healthy}").json()["storage_health"]["ok"] is True


def test_running_records_show_rate_and_eta(make_config, client_for, big_source):
    config = make_config(extra=f'[sources.big]\nkind = "ndjson"\npath = "{big_source}"\n')
    client = client_for(config)
    pid = create_policy(client, source="big")
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    running = wait_for(
        client,
        f"/api/v1/backups/{sid}",
        lambda b: b["status"] != "requested" and b["progress"] > 5,
        timeout=30,
    )
    if running["status"] == "running":
        assert running["bytes_per_second"] > 0 and running["items_per_second"] > 0
        assert running["eta_seconds"] is not None and running["eta_seconds"] >= 0
        expected = running["elapsed_seconds"] * (100 - running["progress"]) / running["progress"]
        assert abs(running["eta_seconds"] - expected) < 0.2
    done = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "completed", timeout=60)
    assert done["eta_seconds"] is None and done["bytes_per_second"] is None
    assert running["status"] == "running", "the run ended before it could be watched"
