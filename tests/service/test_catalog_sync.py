"""Catalog resync: the bucket outlives the control plane. A fresh installation pointed at
the same storage rebuilds Backup Records from the manifests and restores from them."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest

from api.cli import main
from api.config import DEMO_DATA
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.stores import docs as _docs
from tests.support.stores import s3_storage as _s3_storage
from tests.support.stores import wipe_event_store as _wipe_event_store


def _put_junk(config, storage: str, request) -> None:
    """An archive that never completed (no manifest) and a manifest that is not one."""
    if storage == "s3":
        s3 = boto3.client("s3", endpoint_url=config.storages["s3"].endpoint_url, region_name="us-east-1")
        bucket = config.storages["s3"].bucket
        s3.put_object(Bucket=bucket, Key="backups/team-a/nightly/half.tar", Body=b"x" * 100)
        s3.put_object(Bucket=bucket, Key="backups/team-a/odd.tar", Body=b"tar")
        s3.put_object(Bucket=bucket, Key="backups/team-a/odd.tar.manifest.json", Body=b"{not json")
    else:
        root = config.storages["local"].path
        (root / "nightly" / "half.tar").write_bytes(b"x" * 100)
        (root / "odd.tar").write_bytes(b"tar")
        (root / "odd.tar.manifest.json").write_bytes(b"{not json")


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_fresh_installation_resyncs_and_restores(storage, backend, make_config, client_for, request):
    storages = ""
    if storage == "s3":
        storages = _s3_storage(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket"))
    config = make_config(storages=storages)
    client = client_for(config)
    pid = create_policy(client, storage=storage, retention={"expire_after": "7d"})
    originals = [completed_snapshot(client, pid) for _ in range(2)]
    assert all(s["status"] == "completed" for s in originals)
    # A run that failed leaves nothing a sync could mistake for a snapshot.
    _put_junk(config, storage, request)

    # Syncing the installation that wrote the archives changes nothing, and does not
    # even fetch their manifests (only the stranger's).
    before = client.get("/api/v1/events?limit=500").json()["items"]
    located = client.app.state.runtime.resources.storages[storage]
    fetched: list[str] = []
    get_bytes = located.get_bytes
    located.get_bytes = lambda key: fetched.append(key) or get_bytes(key)
    r = client.post(f"/api/v1/storages/{storage}/sync")
    assert fetched == ["odd.tar.manifest.json"]
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == [] and report["known"] == 2
    assert report["incomplete"] == ["nightly/half.tar"]
    assert [i["key"] for i in report["invalid"]] == ["odd.tar.manifest.json"]
    assert client.get("/api/v1/events?limit=500").json()["items"] == before
    client.__exit__(None, None, None)

    _wipe_event_store(config, backend)
    fresh = client_for(config)
    assert fresh.get("/api/v1/backups").json()["items"] == []

    dry = fresh.post(f"/api/v1/storages/{storage}/sync?dry_run=true").json()
    assert dry["dry_run"] and len(dry["imported"]) == 2
    assert fresh.get("/api/v1/backups").json()["items"] == [], "a dry run records nothing"
    assert fresh.get("/api/v1/events").json()["items"] == []

    report = fresh.post(f"/api/v1/storages/{storage}/sync").json()
    assert len(report["imported"]) == 2 and report["known"] == 0
    assert report["incomplete"] == ["nightly/half.tar"]
    records = {r["id"]: r for r in fresh.get("/api/v1/backups").json()["items"]}
    assert set(records) == {s["id"] for s in originals}, "imported snapshots keep their original ids"
    for original in originals:
        rec = records[original["id"]]
        assert rec["status"] == "completed" and rec["trigger"] == "import"
        assert rec["items"] == 3650 and rec["file_name"] == original["file_name"]
        assert rec["collections"]["orders"]["items"] == 2600
        assert rec["transferred_bytes"] == original["transferred_bytes"]
        # The expiry follows the original run's retention, from its finish time.
        drift = datetime.fromisoformat(rec["expires_at"]) - datetime.fromisoformat(original["expires_at"])
        assert abs(drift) < timedelta(seconds=5)
        assert rec["download_url"]
    policies = fresh.get("/api/v1/policies").json()["items"]
    assert [(p["name"], p["status"]) for p in policies] == [("nightly", "stopped")]

    # Idempotent: a second sync imports nothing and writes no event.
    events = fresh.get("/api/v1/events?limit=500").json()["items"]
    again = fresh.post(f"/api/v1/storages/{storage}/sync").json()
    assert again["imported"] == [] and again["known"] == 2
    assert fresh.get("/api/v1/events?limit=500").json()["items"] == events
    assert any(e["type"] == "SnapshotImported" for e in events)

    # The newest snapshot restores with identical content.
    newest = max(originals, key=lambda s: s["created_at"])
    imported = fresh.get(f"/api/v1/backups/{newest['id']}").json()
    assert imported["verification"] == "unverified"  # nothing signed it: an operator must say so
    r = fresh.post("/api/v1/restores", json={"snapshot_id": newest["id"], "target": "scratch"})
    assert r.status_code == 409 and "trust_unverified" in r.json()["error"], r.text
    r = fresh.post(
        "/api/v1/restores", json={"snapshot_id": newest["id"], "target": "scratch", "trust_unverified": True}
    )
    assert r.status_code == 202, r.text
    rec = wait_for(
        fresh, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
    )
    assert rec["status"] == "completed", rec["error"]
    scratch = config.targets["scratch"].path
    for name in ("customers", "orders", "products"):
        assert _docs(scratch / f"{name}.ndjson") == _docs(DEMO_DATA / f"{name}.ndjson")


def test_sync_joins_a_live_policy_of_the_same_name_and_the_cli_reports(make_config, client_for, tmp_path):
    config = make_config()
    client = client_for(config)
    pid = create_policy(client, name="weekly")
    snap = completed_snapshot(client, pid)
    # Another installation's archive lands in the same location under a copied name.
    root: Path = config.storages["local"].path
    manifest = json.loads((root / f"weekly/{snap['file_name']}.manifest.json").read_text())
    manifest["snapshot_id"] = "not-a-uuid"
    shutil.copy(root / f"weekly/{snap['file_name']}", root / "weekly/copied.tar")
    (root / "weekly/copied.tar.manifest.json").write_text(json.dumps(manifest))

    report = client.post("/api/v1/storages/local/sync").json()
    assert [i["archive_key"] for i in report["imported"]] == ["weekly/copied.tar"]
    rows = client.get(f"/api/v1/backups?policy_id={pid}").json()["items"]
    assert sorted(r["sub_name"] for r in rows) == ["weekly#1", "weekly#2"]
    assert client.get(f"/api/v1/policies/{pid}").json()["status"] == "active"

    assert client.post("/api/v1/storages/nowhere/sync").json()["field"] == "storage"
    assert client.post("/api/v1/storages/local/sync?dry_run=maybe").json()["field"] == "dry_run"
    client.__exit__(None, None, None)

    cfg = str(tmp_path / "snapledger.toml")
    assert main(["--config", cfg, "storage", "sync", "local"]) == 0
    assert main(["--config", cfg, "storage", "sync", "nowhere"]) == 2
    assert main(["--config", cfg, "storage", "list"]) == 0


def test_periodic_sync_imports_encrypted_archives_without_their_key(make_config, client_for, tmp_path):
    """A location with sync_interval_seconds is resynced by the maintenance loop. The
    sidecar manifest is plaintext, so an encrypted archive is imported without its key;
    reading it then needs the key, and says so."""
    import os
    from uuid import uuid4

    from transfer.archive.crypto import Keyring
    from transfer.runs.backup import run_backup
    from transfer.sources.ndjson import NdjsonSource
    from transfer.storage import LocalStorage

    shared = tmp_path / "shared"
    keyring = Keyring("shared", "k1", {"k1": os.urandom(32)})
    header = {"snapshot_id": str(uuid4()), "policy": "elsewhere", "source": "demo"}
    run_backup(
        NdjsonSource("demo", DEMO_DATA), LocalStorage("shared", shared), "elsewhere/a.tar", [], [],
        header, lambda *a: None, lambda: False, keyring=keyring,
    )  # fmt: skip
    config = make_config(
        extra="[worker]\nscheduler_interval = 0.2\n",
        storages=f'[storages.shared]\nurl = "{shared}"\nsync_interval_seconds = 10\n',
    )
    client = client_for(config)
    rows = wait_for(client, "/api/v1/backups", lambda b: len(b["items"]) == 1, timeout=15)["items"]
    assert rows[0]["id"] == header["snapshot_id"] and rows[0]["requested_by"] == "system:sync"
    assert rows[0]["items"] == 3650 and rows[0]["storage"] == "shared"
    policy = client.get(f"/api/v1/policies/{rows[0]['policy_id']}").json()
    assert (policy["name"], policy["status"]) == ("elsewhere", "stopped")
    r = client.post(
        "/api/v1/restores", json={"snapshot_id": rows[0]["id"], "target": "scratch", "trust_unverified": True}
    )
    rec = wait_for(
        client, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
    )
    assert rec["status"] == "failed" and "'k1'" in rec["error"], rec["error"]
