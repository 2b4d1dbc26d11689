"""The archive is standard tar+gzip; a damaged one is refused and the target left untouched."""

from __future__ import annotations

import gzip
import json
import subprocess
import tarfile

from api.config import DEMO_DATA
from tests.support.api import completed_snapshot, create_policy, wait_for


def _archive_path(client, snap):
    return client.app.state.runtime.config.storages["local"].path / snap["policy_name"] / snap["file_name"]


def test_archive_unpacks_with_plain_tools(client, tmp_path):
    snap = completed_snapshot(client, create_policy(client))
    archive = _archive_path(client, snap)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(tmp_path)], check=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    sidecar = json.loads(archive.with_name(archive.name + ".manifest.json").read_text())
    assert manifest == sidecar
    for name, entry in manifest["collections"].items():
        member = tmp_path / entry["member"]
        sha = subprocess.run(["sha256sum", str(member)], capture_output=True, text=True, check=True)
        assert sha.stdout.split()[0] == entry["sha256"]
        assert gzip.decompress(member.read_bytes()) == (DEMO_DATA / f"{name}.ndjson").read_bytes()


def test_corrupted_archive_fails_restore_and_writes_nothing(client):
    snap = completed_snapshot(client, create_policy(client))
    archive = _archive_path(client, snap)
    with tarfile.open(archive) as tar:
        offset = tar.getmember("data/orders.ndjson.gz").offset_data
    data = bytearray(archive.read_bytes())
    data[offset + 2000] ^= 0xFF
    archive.write_bytes(bytes(data))
    rid = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"}).json()["id"]
    rec = wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))
    assert rec["status"] == "failed"
    assert "orders" in rec["error"]
    scratch = client.app.state.runtime.config.targets["scratch"].path
    assert not scratch.exists() or not list(scratch.iterdir())


def test_archive_without_manifest_is_not_restorable(client):
    snap = completed_snapshot(client, create_policy(client))
    archive = _archive_path(client, snap)
    archive.with_name(archive.name + ".manifest.json").unlink()
    rid = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"}).json()["id"]
    rec = wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))
    assert rec["status"] == "failed" and "no manifest" in rec["error"]


def test_verify_command(client, capsys):
    from api.cli import main

    snap = completed_snapshot(client, create_policy(client))
    config = client.app.state.runtime.config
    path = str(config.data_dir.parent / "snapledger.toml")
    assert main(["--config", path, "verify", snap["id"]]) == 0
    assert "OK nightly#1" in capsys.readouterr().out
    archive = _archive_path(client, snap)
    data = bytearray(archive.read_bytes())
    data[1500] ^= 0xFF  # inside the first data member
    archive.write_bytes(bytes(data))
    assert main(["--config", path, "verify", snap["id"]]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert main(["--config", path, "verify", "not-an-id"]) == 2
    assert main(["--config", path, "verify", "00000000-0000-4000-8000-000000000000"]) == 2
