"""A damaged collection does not cost the others: the snapshot is partially failed, names
what it left out and why, and restores what it holds. All damaged: the run fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.api import create_policy, wait_for
from transfer.runs.backup import run_backup
from transfer.sources.ndjson import NdjsonSource
from transfer.storage import LocalStorage


def _source(root: Path, broken: int) -> Path:
    src = root / "src"
    src.mkdir()
    (src / "alpha.ndjson").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(500)))
    (src / "beta.ndjson").write_text("".join(json.dumps({"j": j}) + "\n" for j in range(300)))
    for n in range(broken):
        (src / f"broken{n}.ndjson.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip at all" * 50)
    return src


def test_partially_failed_snapshot_names_the_failures_and_restores_the_rest(
    make_config, client_for, tmp_path
):
    src = _source(tmp_path, broken=1)
    config = make_config(extra=f'[sources.shaky]\nkind = "ndjson"\npath = "{src}"\n')
    client = client_for(config)
    pid = create_policy(client, source="shaky")
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    rec = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] not in ("requested", "running"))
    assert rec["status"] == "partially_failed", rec
    assert list(rec["failed_collections"]) == ["broken0"]
    assert rec["failed_collections"]["broken0"].startswith(("zlib.error: ", "BadGzipFile: "))
    assert rec["error"].startswith("collections failed: broken0 (")
    assert sorted(rec["collections"]) == ["alpha", "beta"] and rec["items"] == 800
    assert rec["download_url"] and rec["progress"] == 100.0

    policy = client.get(f"/api/v1/policies/{pid}").json()
    assert "broken0" in policy["last_failure_reason"]
    log = client.get(f"/api/v1/backups/{sid}/log").json()["items"]
    assert any(e["type"] == "SnapshotPartiallyFailed" and "broken0" in e["message"] for e in log)
    listed = client.get("/api/v1/backups?status=partially_failed").json()["items"]
    assert [r["id"] for r in listed] == [sid]

    r = client.post("/api/v1/restores", json={"snapshot_id": sid, "target": "scratch"})
    assert r.status_code == 202, r.text
    done = wait_for(
        client, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
    )
    assert done["status"] == "completed", done["error"]
    scratch = config.targets["scratch"].path
    assert (scratch / "alpha.ndjson").read_bytes() == (src / "alpha.ndjson").read_bytes()
    assert not (scratch / "broken0.ndjson").exists()
    bad = client.post(
        "/api/v1/restores", json={"snapshot_id": sid, "target": "scratch", "collections": ["broken0"]}
    )
    assert bad.status_code == 404 and bad.json()["field"] == "collections"  # nothing of that name in it


@pytest.mark.parametrize("parallel", [1, 3])
def test_pipeline_leaves_out_only_the_damaged_collections(tmp_path, parallel):
    src = _source(tmp_path, broken=2)
    storage = LocalStorage("l", tmp_path / "store")
    result = run_backup(
        NdjsonSource("s", src),
        storage,
        "k.tar",
        [],
        [],
        {},
        lambda *a: None,
        lambda: False,
        parallel=parallel,
    )
    assert sorted(result.failed) == ["broken0", "broken1"]
    assert sorted(result.collections) == ["alpha", "beta"]
    manifest = json.loads(storage.get_bytes("k.tar.manifest.json"))
    assert sorted(manifest["collections"]) == ["alpha", "beta"]
    assert sorted(manifest["failed_collections"]) == ["broken0", "broken1"]


def test_every_collection_damaged_fails_the_run(make_config, client_for, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "only.ndjson.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 20)
    config = make_config(extra=f'[sources.dead]\nkind = "ndjson"\npath = "{src}"\n')
    client = client_for(config)
    pid = create_policy(client, source="dead")
    sid = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    rec = wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] not in ("requested", "running"))
    assert rec["status"] == "failed" and "every collection failed: only:" in rec["error"]
    assert not list(config.storages["local"].path.rglob("*.tar*")), "no archive is left behind"
