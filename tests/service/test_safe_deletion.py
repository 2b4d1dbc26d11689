"""Safe deletion: dry runs report exactly what would go and change nothing; archives under
S3 Object Lock cannot be deleted before their retain-until time, by snapledger or by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from api.cli import main
from tests.support.api import completed_snapshot, create_policy, wait_for
from transfer.storage import StorageError


def _state(client) -> tuple[list, list]:
    return (
        client.get("/api/v1/events?limit=500").json()["items"],
        client.get("/api/v1/backups?limit=500").json()["items"],
    )


def test_dry_runs_report_exactly_and_change_nothing(make_config, client_for, tmp_path):
    # No maintenance loop: its own retention pass deleted the snapshots between the two
    # reads of the state once, on a loaded machine. The test runs retention itself.
    config = make_config("[worker]\nscheduler = false\n")
    client = client_for(config)
    pid = create_policy(client, retention={"keep_last": 1})
    client.post("/api/v1/retention/run")  # nothing to do yet
    snaps = [completed_snapshot(client, pid) for _ in range(3)]
    root = config.storages["local"].path
    files = sorted(p.name for p in root.rglob("*"))
    before = _state(client)

    # Retention: the two older snapshots would go.
    plan = client.post("/api/v1/retention/run?dry_run=true").json()
    assert plan["dry_run"] is True
    expected = sorted(s["id"] for s in snaps[:2])
    assert sorted(r["id"] for r in plan["snapshots"]) == expected
    assert plan["bytes"] == sum(s["transferred_bytes"] for s in snaps[:2]) and plan["count"] == 2

    one = client.delete(f"/api/v1/backups/{snaps[2]['id']}?dry_run=true").json()
    assert [r["id"] for r in one["snapshots"]] == [snaps[2]["id"]]
    assert one["bytes"] == snaps[2]["transferred_bytes"]
    whole = client.delete(f"/api/v1/policies/{pid}?dry_run=true").json()
    assert sorted(r["id"] for r in whole["snapshots"]) == sorted(s["id"] for s in snaps)
    kept = client.delete(f"/api/v1/policies/{pid}?dry_run=true&keep_files=true").json()
    assert kept["snapshots"] == [] and kept["bytes"] == 0
    assert client.delete(f"/api/v1/backups/{uuid.uuid4()}?dry_run=true").status_code == 404
    assert client.delete(f"/api/v1/backups/{snaps[0]['id']}?dry_run=perhaps").json()["field"] == "dry_run"

    assert _state(client) == before, "a dry run writes no event and changes no record"
    assert sorted(p.name for p in root.rglob("*")) == files, "a dry run removes no file"
    client.__exit__(None, None, None)

    cfg = str(tmp_path / "snapledger.toml")
    assert main(["--config", cfg, "retention", "run", "--dry-run"]) == 0
    assert main(["--config", cfg, "snapshot", "delete", "nightly#3", "--dry-run"]) == 0
    assert main(["--config", cfg, "policy", "delete", "nightly", "--dry-run"]) == 0
    assert sorted(p.name for p in root.rglob("*")) == files

    # The real pass deletes exactly what the dry run listed.
    assert main(["--config", cfg, "retention", "run"]) == 0
    again = client_for(config)
    for sid in expected:
        wait_for(again, f"/api/v1/backups/{sid}", lambda b: "was deleted" in b.get("error", ""))
    assert again.get(f"/api/v1/backups/{snaps[2]['id']}").json()["status"] == "completed"
    assert not list(root.rglob(f"*{snaps[0]['file_name']}*"))


@pytest.fixture
def locked_bucket(s3_endpoint: str) -> str:
    name = f"lock-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name, ObjectLockEnabledForBucket=True
    )
    return name


def test_object_locked_snapshot_cannot_be_deleted_early(make_config, client_for, s3_endpoint, locked_bucket):
    config = make_config(
        storages=f"""
[storages.vault]
url = "s3://{locked_bucket}/vault"
endpoint_url = "{s3_endpoint}"
region = "us-east-1"
object_lock = "compliance"
object_lock_days = 3
"""
    )
    client = client_for(config)
    pid = create_policy(
        client, name="kept", storage="vault", retention={"expire_after": "7d", "keep_last": 1}
    )
    snaps = [completed_snapshot(client, pid) for _ in range(2)]
    assert all(s["status"] == "completed" for s in snaps), snaps
    snap = snaps[0]
    assert snap["locked_until"] == snap["expires_at"]

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    key = f"vault/kept/{snap['file_name']}"
    for k in (key, key + ".manifest.json"):
        head = s3.head_object(Bucket=locked_bucket, Key=k)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(
            head["ObjectLockRetainUntilDate"] - datetime.fromisoformat(snap["locked_until"])
        ) < timedelta(seconds=1)

    r = client.delete(f"/api/v1/backups/{snap['id']}")
    assert r.status_code == 409 and "object lock until" in r.json()["error"], r.text
    plan = client.delete(f"/api/v1/policies/{pid}?dry_run=true").json()
    assert all("object lock" in row["refused"] for row in plan["snapshots"]) and plan["bytes"] == 0
    assert client.delete(f"/api/v1/policies/{pid}").status_code == 409
    retention = client.post("/api/v1/retention/run").json()
    assert retention["snapshots"] == [], "retention keeps a locked snapshot"
    assert client.get(f"/api/v1/backups/{snap['id']}").json()["status"] == "completed"

    # Not even the storage layer (or anyone with the bucket's credentials) can remove it.
    storage = client.app.state.runtime.resources.storages["vault"]
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete(f"kept/{snap['file_name']}")
    assert s3.head_object(Bucket=locked_bucket, Key=key)["ContentLength"] == snap["transferred_bytes"]

    # A snapshot without an expiry is locked for object_lock_days.
    client.patch(f"/api/v1/policies/{pid}", json={"retention": None})
    open_ended = completed_snapshot(client, pid)
    locked = datetime.fromisoformat(open_ended["locked_until"])
    assert timedelta(days=3) - timedelta(minutes=1) < locked - datetime.now(UTC) <= timedelta(days=3)
    assert open_ended["expires_at"] is None
