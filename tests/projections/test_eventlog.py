"""The Event Log is the event stream itself: order, content and per-policy/per-task scope."""

from __future__ import annotations

from tests.support.api import completed_snapshot, create_policy, wait_for

API = "/api/v1"


def test_policy_event_log_tells_the_whole_cycle_in_order(client):
    pid = create_policy(client)
    other = create_policy(client, name="other")
    snap = completed_snapshot(client, pid)
    completed_snapshot(client, other)
    rid = client.post(f"{API}/restores", json={"snapshot_id": snap["id"], "target": "scratch"}).json()["id"]
    wait_for(client, f"{API}/restores/{rid}", lambda b: b["status"] == "completed")
    client.patch(f"{API}/policies/{pid}", json={"schedule": "@daily"}, headers={"X-Snapledger-Actor": "eve"})

    entries = client.get(f"{API}/policies/{pid}/events").json()["items"]
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = [e["type"] for e in entries]
    assert types[:3] == ["PolicyCreated", "SnapshotTaken", "SnapshotRequested"]
    assert types.index("SnapshotStarted") < types.index("SnapshotCompleted") < types.index("RestoreRequested")
    assert types.index("RestoreStarted") < types.index("RestoreCompleted") < types.index("PolicyEdited")
    assert "SnapshotProgressed" in types
    ids = {e["aggregate_id"] for e in entries}
    assert ids == {pid, snap["id"], rid}  # nothing of the other policy
    edited = entries[-1]
    assert edited["actor"] == "eve" and edited["aggregate_type"] == "BackupPolicy"
    assert edited["data"]["changes"] == {"schedule": {"old": None, "new": "@daily"}}
    assert 'schedule null -> "@daily"' in edited["message"]
    done = next(e for e in entries if e["type"] == "SnapshotCompleted")
    assert done["data"]["items"] == 3650 and "3650 items" in done["message"]
    assert done["version"] > 1 and done["time"] >= entries[0]["time"]

    page = client.get(f"{API}/policies/{pid}/events?limit=3").json()
    rest = client.get(f"{API}/policies/{pid}/events?after={page['next_cursor']}").json()["items"]
    assert [e["position"] for e in page["items"] + rest] == positions


def test_task_log_and_global_log(client):
    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    log = client.get(snap["log_url"]).json()["items"]
    assert {e["aggregate_id"] for e in log} == {snap["id"]}
    assert log[0]["type"] == "SnapshotRequested" and log[-1]["type"] == "SnapshotCompleted"
    assert log[1]["message"].startswith(snap["task_name"])

    everything = client.get(f"{API}/events").json()["items"]
    assert [e["position"] for e in everything] == list(range(1, len(everything) + 1))
    only = client.get(f"{API}/events?type=SnapshotCompleted,PolicyCreated").json()["items"]
    assert [e["type"] for e in only] == ["PolicyCreated", "SnapshotCompleted"]
    after = client.get(f"{API}/events?after={everything[-2]['position']}").json()["items"]
    assert after == everything[-1:]
    assert client.get(f"{API}/backups/00000000-0000-4000-8000-000000000000/log").status_code == 404
