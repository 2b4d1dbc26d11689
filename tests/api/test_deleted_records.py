"""A deleted record is gone from its own address (404 saying so), stays in the lists with
status=deleted, and keeps its whole history in the Event Log; what a delete would remove
is a read (GET .../deletion-plan); a path asked with another method answers 405 naming all
of that path's methods."""

from __future__ import annotations

from tests.support.api import completed_snapshot, create_policy

API = "/api/v1"


def test_deleted_records_answer_404_and_keep_their_history(client):
    pid = create_policy(client, "gone")
    snap = completed_snapshot(client, pid)
    plan = client.get(f"{API}/policies/{pid}/deletion-plan")
    assert plan.status_code == 200 and plan.json()["count"] == 1 and plan.json()["dry_run"] is True
    one = client.get(f"{API}/backups/{snap['id']}/deletion-plan").json()
    assert [s["id"] for s in one["snapshots"]] == [snap["id"]]
    assert client.delete(f"{API}/policies/{pid}").status_code == 200

    for path in (f"/policies/{pid}", f"/policies/{pid}?as_of=1", f"/policies/{pid}/events",
                 f"/policies/{pid}/deletion-plan", f"/backups/{snap['id']}", f"/backups/{snap['id']}/log",
                 f"/backups/{snap['id']}/download", f"/backups/{snap['id']}/deletion-plan"):  # fmt: skip
        r = client.get(API + path)
        assert r.status_code == 404 and "was deleted" in r.json()["error"], (path, r.text)

    policies = client.get(f"{API}/policies?status=deleted").json()["items"]
    assert [p["id"] for p in policies] == [pid]
    history = client.get(policies[0]["events_url"]).json()["items"]
    assert history[0]["type"] == "PolicyCreated"
    assert {"SnapshotCompleted", "SnapshotDeleted", "PolicyDeleted"} <= {e["type"] for e in history}
    task = client.get(f"{API}/events", params={"task_id": snap["id"], "type": "SnapshotDeleted"}).json()[
        "items"
    ]
    assert [e["type"] for e in task] == ["SnapshotDeleted"]
    assert client.get(f"{API}/events", params={"task_id": pid}).status_code == 404  # a policy is no task
    assert client.get(f"{API}/events", params={"policy_id": snap["id"]}).json()["field"] == "policy_id"


def test_a_known_path_asked_with_another_method_names_all_its_methods(client):
    pid = create_policy(client, "methods")
    r = client.request("PUT", f"{API}/policies/{pid}")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}
    r = client.request("GET", f"{API}/retention/run")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["field"] is None
    assert client.get(f"{API}/no/such/thing").status_code == 404
