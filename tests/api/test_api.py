"""Every seed operation through HTTP, and the precise 4xx an operator gets for bad input."""

from __future__ import annotations

import pytest

from tests.support.api import completed_snapshot, create_policy

API = "/api/v1"


def test_policy_crud_through_http(client):
    pid = create_policy(client, schedule="0 3 * * *", retention={"keep_last": 5, "expire_after": "30d"})
    p = client.get(f"{API}/policies/{pid}").json()
    assert p["name"] == "nightly" and p["schedule"] == "0 3 * * *" and p["status"] == "active"
    assert p["retention"] == {"keep_last": 5, "expire_after_seconds": 2592000}
    assert p["created_by"] == "api"

    r = client.patch(
        f"{API}/policies/{pid}",
        json={"schedule": "@hourly", "name": "hourly"},
        headers={"X-Snapledger-Actor": "bob"},
    )
    assert r.status_code == 200, r.text
    p = client.get(f"{API}/policies/{pid}").json()
    assert (p["name"], p["schedule"]) == ("hourly", "@hourly")

    assert client.post(f"{API}/policies/{pid}/stop").status_code == 200
    assert client.get(f"{API}/policies/{pid}").json()["status"] == "stopped"
    r = client.post(f"{API}/policies/{pid}/stop")
    assert r.status_code == 409 and "already stopped" in r.json()["error"]

    snap = completed_snapshot(client, pid)  # Take a Snapshot re-activates
    assert snap["status"] == "completed"
    p = client.get(f"{API}/policies/{pid}").json()
    assert p["status"] == "active" and p["snapshots_count"] == 1 and p["last_snapshot_id"] == snap["id"]

    listed = client.get(f"{API}/policies").json()
    assert [x["id"] for x in listed["items"]] == [pid] and listed["next_cursor"] is None
    assert client.delete(f"{API}/policies/{pid}").status_code == 200
    assert client.get(f"{API}/policies?status=deleted").json()["items"][0]["id"] == pid
    assert client.patch(f"{API}/policies/{pid}", json={"schedule": "@daily"}).status_code == 409


def test_backup_records_filter_and_paginate(client):
    a = create_policy(client, name="a")
    b = create_policy(client, name="b")
    ids = [completed_snapshot(client, a)["id"] for _ in range(3)] + [completed_snapshot(client, b)["id"]]
    page1 = client.get(f"{API}/backups?limit=2").json()
    page2 = client.get(f"{API}/backups?limit=2&cursor={page1['next_cursor']}").json()
    assert [r["id"] for r in page1["items"] + page2["items"]] == ids[::-1]
    assert page2["next_cursor"] is None
    only_a = client.get(f"{API}/backups?policy_id={a}&status=completed").json()["items"]
    assert sorted(r["id"] for r in only_a) == sorted(ids[:3])
    row = only_a[0]
    for column in (
        "sub_name",
        "file_name",
        "download_url",
        "task_name",
        "elapsed_seconds",
        "items",
        "progress",
        "created_at",
        "expires_at",
        "transferred_bytes",
        "status",
        "error",
    ):
        assert column in row


def test_duplicate_name_is_409_naming_the_field(client):
    create_policy(client)
    r = client.post(f"{API}/policies", json={"name": "nightly", "source": "demo", "storage": "local"})
    assert r.status_code == 409 and r.json()["field"] == "name"


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"source": "demo", "storage": "local"}, 422, "name"),
        ({"name": "n", "source": "nope", "storage": "local"}, 422, "source"),
        ({"name": "n", "source": "demo", "storage": "s9"}, 422, "storage"),
        ({"name": "n", "source": "demo", "storage": "local", "schedule": "every day"}, 422, "schedule"),
        (
            {"name": "n", "source": "demo", "storage": "local", "retention": {"keep_last": -1}},
            422,
            "retention.keep_last",
        ),
        ({"name": "n", "source": "demo", "storage": "local", "collections": "orders"}, 422, "collections"),
        ({"name": "n", "source": "demo", "storage": "local", "password": "x"}, 422, "password"),
    ],
)
def test_create_policy_bad_input(client, body, status, field):
    r = client.post(f"{API}/policies", json=body)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert client.get(f"{API}/policies").json()["items"] == []  # nothing half-written


def test_malformed_requests(client):
    r = client.post(f"{API}/policies", content=b"{not json")
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.post(f"{API}/policies", json=[1, 2])
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.get(f"{API}/policies/not-a-uuid")
    assert r.status_code == 422 and r.json()["field"] == "policy_id"
    r = client.get(f"{API}/policies/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404
    r = client.post(f"{API}/policies/00000000-0000-4000-8000-000000000000/snapshots")
    assert r.status_code == 404
    for query, field in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("status=done", "status"),
        ("policy_id=x", "policy_id"),
        ("cursor=%%%", "cursor"),
    ]:
        r = client.get(f"{API}/backups?{query}")
        assert (r.status_code, r.json()["field"]) == (422, field), query
    r = client.get(f"{API}/events?type=Nope")
    assert r.status_code == 422 and r.json()["field"] == "type"
    r = client.get(f"{API}/events?after=-1")
    assert r.status_code == 422 and r.json()["field"] == "after"
    r = client.delete(f"{API}/policies/00000000-0000-4000-8000-000000000000?keep_files=maybe")
    assert r.status_code == 422 and r.json()["field"] == "keep_files"
    r = client.get(f"{API}/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    r = client.put(f"{API}/policies")
    assert r.status_code == 405 and "error" in r.json()
    r = client.post(
        f"{API}/policies",
        json={"name": "n", "source": "demo", "storage": "local"},
        headers={"X-Snapledger-Actor": " "},
    )
    assert r.status_code == 422 and r.json()["field"] == "X-Snapledger-Actor"


def test_restore_bad_input(client):
    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    cases = [
        ({"target": "scratch"}, 422, "snapshot_id"),
        ({"snapshot_id": "x", "target": "scratch"}, 422, "snapshot_id"),
        ({"snapshot_id": "00000000-0000-4000-8000-000000000000", "target": "scratch"}, 404, "snapshot_id"),
        ({"snapshot_id": snap["id"], "target": "prod"}, 422, "target"),
        ({"snapshot_id": snap["id"]}, 422, "target"),
        ({"snapshot_id": snap["id"], "target": "scratch", "collections": ["ghosts"]}, 404, "collections"),
        ({"snapshot_id": snap["id"], "target": "scratch", "mode": "x"}, 422, "mode"),
    ]
    for body, status, field in cases:
        r = client.post(f"{API}/restores", json=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)
    assert client.get(f"{API}/restores").json()["items"] == []
    client.delete(f"{API}/backups/{snap['id']}")
    r = client.post(f"{API}/restores", json={"snapshot_id": snap["id"], "target": "scratch"})
    assert r.status_code == 409


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["worker"] is True


def test_list_pages_are_reused_only_while_the_views_stand_still(client, monkeypatch):
    """Identical list requests reuse the rendered page; any applied event invalidates it,
    so a record never reads older than the view it came from."""
    from api.records import Records

    renders = []
    page = Records.page
    monkeypatch.setattr(Records, "page", lambda self, kind, *a: renders.append(kind) or page(self, kind, *a))
    pid = create_policy(client)
    first = client.get("/api/v1/backups?limit=5").json()
    again = client.get("/api/v1/backups?limit=5").json()
    assert first == again and len(renders) == 1, "a standing view renders once"
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    rows = client.get("/api/v1/backups?limit=5").json()["items"]
    assert [r["id"] for r in rows] == [sid], "an applied event invalidates the page"
    assert len(renders) == 2
    client.get("/api/v1/backups?limit=5&status=completed")
    assert len(renders) == 3, "other filters are other pages"


def test_every_restore_option_of_the_schema_reaches_the_restore(client):
    """An option the schema accepts and the command drops would be a silent lie."""
    from api.schemas import RESTORE_CREATE

    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    options = {"dry_run": True, "keep_owners": True, "trust_unverified": True, "validate": True}
    body = {"snapshot_id": snap["id"], "target": "scratch", "existing": "fail", **options}
    subject = {"snapshot_id", "policy_id", "to_time", "to_lsn"}  # what is restored: tests of their own
    assert set(RESTORE_CREATE["properties"]) - subject - {"target", "collections", "mapping"} == {
        "existing", *options,
    }  # fmt: skip
    r = client.post(f"{API}/restores", json=body)
    assert r.status_code == 202, r.text
    restore = client.app.state.runtime.app.get_restore(r.json()["id"])
    assert (restore.dry_run, restore.keep_owners, restore.trust_unverified, restore.validate) == (
        True, True, True, True,
    )  # fmt: skip
    assert restore.existing == "fail"
