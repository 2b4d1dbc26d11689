"""Imported archives are signed or marked: a location with a signing key puts an HMAC of
each manifest beside it; a catalog sync imports what verifies as `signed`, refuses what does
not, and marks what nothing authenticates `unverified` (restored only on request)."""

from __future__ import annotations

import json

import pytest

from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.keys import KEY_A, KEY_B
from tests.support.stores import wipe_event_store as _wipe_event_store
from transfer.storage.layout import manifest_key, signature_key

SIGNED = """
[storages.signed]
url = "signed"
signing_key_env = "SNAPLEDGER_TEST_SIGNING_KEY"
"""
ENCRYPTED = """
[storages.sealed]
url = "sealed"
encryption_key_id = "k1"
encryption_key_env = "SNAPLEDGER_TEST_KEY_A"
"""


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPLEDGER_TEST_SIGNING_KEY", KEY_B)
    monkeypatch.setenv("SNAPLEDGER_TEST_KEY_A", KEY_A)


def _restore(client, snapshot_id: str, **options) -> dict:
    r = client.post("/api/v1/restores", json={"snapshot_id": snapshot_id, "target": "scratch", **options})
    assert r.status_code == 202, r.text
    return wait_for(
        client, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
    )


def test_a_signed_locations_archives_import_as_signed_and_restore(backend, make_config, client_for):
    config = make_config(storages=SIGNED)
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client, storage="signed"))
    root = config.storages["signed"].path
    key = f"nightly/{snap['file_name']}"
    assert json.loads((root / signature_key(key)).read_text())["algorithm"] == "HMAC-SHA256"
    client.__exit__(None, None, None)

    _wipe_event_store(config, backend)
    fresh = client_for(config)
    report = fresh.post("/api/v1/storages/signed/sync").json()
    assert [i["verification"] for i in report["imported"]] == ["signed"] and report["incomplete"] == []
    assert fresh.get(f"/api/v1/backups/{snap['id']}").json()["verification"] == "signed"
    assert _restore(fresh, snap["id"])["status"] == "completed"  # no trust needed


def test_a_signed_location_refuses_an_edited_manifest_and_an_unsigned_archive(
    backend, make_config, client_for
):
    config = make_config(storages=SIGNED)
    client = client_for(config)
    pid = create_policy(client, storage="signed")
    edited, unsigned = completed_snapshot(client, pid), completed_snapshot(client, pid)
    root = config.storages["signed"].path
    a, b = (f"nightly/{s['file_name']}" for s in (edited, unsigned))
    manifest = json.loads((root / manifest_key(a)).read_text())
    manifest["collections"]["orders"]["items"] += 1
    (root / manifest_key(a)).write_text(json.dumps(manifest))
    (root / signature_key(b)).unlink()
    client.__exit__(None, None, None)

    _wipe_event_store(config, backend)
    fresh = client_for(config)
    report = fresh.post("/api/v1/storages/signed/sync").json()
    assert report["imported"] == []
    reasons = {i["key"]: i["reason"] for i in report["invalid"]}
    assert "signature does not match" in reasons[manifest_key(a)]
    assert "has no signature" in reasons[manifest_key(b)]
    assert fresh.get("/api/v1/backups").json()["items"] == []


def test_an_encrypted_locations_archive_imports_as_encrypted_and_is_checked_in_full(
    backend, make_config, client_for
):
    config = make_config(storages=ENCRYPTED)
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client, storage="sealed"))
    client.__exit__(None, None, None)
    _wipe_event_store(config, backend)
    fresh = client_for(config)
    report = fresh.post("/api/v1/storages/sealed/sync").json()
    assert [i["verification"] for i in report["imported"]] == ["encrypted"]
    assert _restore(fresh, snap["id"])["status"] == "completed"  # the key authenticates it


def test_an_unsigned_import_restores_only_when_trusted_and_says_so(backend, make_config, client_for):
    config = make_config()
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client))
    client.__exit__(None, None, None)
    _wipe_event_store(config, backend)
    fresh = client_for(config)
    fresh.post("/api/v1/storages/local/sync")
    r = fresh.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"})
    assert (
        r.status_code == 409 and "unverified" in r.json()["error"] and "trust_unverified" in r.json()["error"]
    )
    r = fresh.post(
        "/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch", "trust_unverified": 1}
    )
    assert r.status_code == 422 and r.json()["field"] == "trust_unverified"
    assert _restore(fresh, snap["id"], trust_unverified=True)["status"] == "completed"
