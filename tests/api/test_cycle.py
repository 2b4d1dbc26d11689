"""The whole cycle an operator relies on: backup -> download -> restore, on both event
stores, into local storage and into S3 over HTTP; stop, delete and rebuild."""

from __future__ import annotations

import io
import json
import tarfile
import time

import boto3
import httpx
import pytest

from api.config import DEMO_DATA
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.stores import docs as _docs
from tests.support.stores import s3_storage as _s3_storage


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_backup_download_restore(storage, make_config, client_for, request):
    storages = ""
    if storage == "s3":
        storages = _s3_storage(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket"))
    config = make_config(storages=storages)
    client = client_for(config)
    pid = create_policy(client, storage=storage, retention={"expire_after": "7d"})

    snap = completed_snapshot(client, pid)
    assert snap["status"] == "completed", snap["error"]
    assert snap["progress"] == 100.0
    assert snap["items"] == 3650
    assert snap["transferred_bytes"] > 0
    assert snap["task_name"].startswith("ddt-backup-")
    assert snap["expires_at"] > snap["created_at"]
    assert snap["file_name"].endswith(".tar") and snap["sub_name"] == "nightly#1"
    assert {c: v["items"] for c, v in snap["collections"].items()} == {
        "customers": 800,
        "orders": 2600,
        "products": 250,
    }

    # Download: the archive is a plain tar whose last member is the manifest.
    r = client.get(snap["download_url"], follow_redirects=False)
    if storage == "s3":
        assert r.status_code == 302 and r.headers["location"].startswith(config.storages["s3"].endpoint_url)
        assert "team-a" in r.headers["location"]
        archive = httpx.get(r.headers["location"]).content
    else:
        assert r.status_code == 200
        assert snap["file_name"] in r.headers["content-disposition"]
        archive = r.content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        assert names[-1] == "manifest.json"
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["collections"]["orders"]["items"] == 2600
    assert manifest["format_version"] == 2 and manifest["source_kind"] == "ndjson"

    # Restore into the scratch target and compare documents with the source.
    r = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    rec = wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))
    assert rec["status"] == "completed", rec["error"]
    assert rec["items"] == 3650 and rec["progress"] == 100.0
    assert all(c["ok"] for c in rec["consistency"].values())
    scratch = config.targets["scratch"].path
    for name in ("customers", "orders", "products"):
        assert _docs(scratch / f"{name}.ndjson") == _docs(DEMO_DATA / f"{name}.ndjson")
    assert not list(scratch.glob("*partial*"))

    listed = client.get("/api/v1/restores").json()["items"]
    assert [r["id"] for r in listed] == [rid]


def test_restore_selected_collections(client):
    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    r = client.post(
        "/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch", "collections": ["products"]}
    )
    rid = r.json()["id"]
    rec = wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] == "completed")
    assert rec["items"] == 250 and list(rec["consistency"]) == ["products"]


def test_policy_collection_selection(client):
    pid = create_policy(client, collections={"exclude": ["orders"]})
    snap = completed_snapshot(client, pid)
    assert sorted(snap["collections"]) == ["customers", "products"]


def test_stop_running_snapshot(make_config, client_for, big_source):
    config = make_config(extra=f'[sources.big]\npath = "{big_source}"\n')
    client = client_for(config)
    pid = create_policy(client, name="big", source="big")
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    running = wait_for(
        client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "running" and b["progress"] > 0
    )
    assert running["current_collection"] == "events"
    asked = time.monotonic()
    r = client.post(f"/api/v1/backups/{sid}/stop")
    assert r.status_code == 200, r.text
    stopped = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "stopped", timeout=10)
    assert time.monotonic() - asked < 2.0, "a running snapshot must stop within 2 seconds"
    assert 0 < stopped["progress"] < 100 and stopped["items"] > 0  # partial progress is kept
    assert stopped["transferred_bytes"] > 0  # compressed bytes so far, not 0 until a member lands
    archives = config.storages["local"].path
    assert not [p for p in archives.rglob("*") if p.is_file()], "a stopped run leaves no objects"
    again = client.post(f"/api/v1/backups/{sid}/stop")
    assert again.status_code == 409 and again.json()["field"] is None


def test_delete_snapshot_removes_archive(client, make_config):
    pid = create_policy(client)
    snap = completed_snapshot(client, pid)
    root = client.app.state.runtime.config.storages["local"].path
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 2  # the archive and its manifest
    r = client.delete(f"/api/v1/backups/{snap['id']}")
    assert r.status_code == 200, r.text
    assert not [p for p in root.rglob("*") if p.is_file()]
    row = next(
        b for b in client.get("/api/v1/backups?status=deleted").json()["items"] if b["id"] == snap["id"]
    )
    assert row["download_url"] is None  # listed as deleted; its own address holds nothing now
    gone = client.get(f"/api/v1/backups/{snap['id']}")
    assert gone.status_code == 404 and "was deleted" in gone.json()["error"]
    assert client.get(f"/api/v1/backups/{snap['id']}/download").status_code == 404
    log = client.get(row["log_url"]).json()["items"]  # its history stays in the Event Log
    assert log[-1]["type"] == "SnapshotDeleted"
    assert client.delete(f"/api/v1/backups/{snap['id']}").status_code == 409


def test_delete_policy_removes_archives_in_s3(make_config, client_for, s3_endpoint, bucket):
    client = client_for(make_config(storages=_s3_storage(s3_endpoint, bucket)))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    pid = create_policy(client, storage="s3")
    completed_snapshot(client, pid)
    completed_snapshot(client, pid)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 4
    r = client.delete(f"/api/v1/policies/{pid}")
    assert r.status_code == 200, r.text
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    rows = client.get(f"/api/v1/backups?policy_id={pid}").json()["items"]
    assert {r["status"] for r in rows} == {"deleted"}


def test_delete_policy_keep_files(client):
    pid = create_policy(client)
    completed_snapshot(client, pid)
    root = client.app.state.runtime.config.storages["local"].path
    r = client.delete(f"/api/v1/policies/{pid}?keep_files=true")
    assert r.status_code == 200, r.text
    assert len([p for p in root.rglob("*") if p.is_file()]) == 2
    assert [p["id"] for p in client.get("/api/v1/policies?status=deleted").json()["items"]] == [pid]
    assert "was deleted" in client.get(f"/api/v1/policies/{pid}").json()["error"]
    # The name is free again for a new policy.
    create_policy(client)


def test_rebuild_produces_fresh_completed_snapshot(client):
    pid = create_policy(client)
    first = completed_snapshot(client, pid)
    client.post(f"/api/v1/policies/{pid}/stop")
    r = client.post(f"/api/v1/policies/{pid}/rebuild")
    assert r.status_code == 202, r.text
    sid = r.json()["snapshot_id"]
    assert sid != first["id"]
    snap = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "completed")
    assert snap["trigger"] == "rebuild" and snap["items"] == 3650
    policy = client.get(f"/api/v1/policies/{pid}").json()
    assert policy["status"] == "active" and policy["rebuilds"] == 1


def test_rebuild_stops_what_runs(make_config, client_for, big_source):
    client = client_for(make_config(extra=f'[sources.big]\npath = "{big_source}"\n'))
    pid = create_policy(client, name="big", source="big")
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "running")
    fresh = client.post(f"/api/v1/policies/{pid}/rebuild").json()["snapshot_id"]
    wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] == "stopped", timeout=10)
    wait_for(client, f"/api/v1/backups/{fresh}", lambda b: b["status"] == "completed", timeout=60)
