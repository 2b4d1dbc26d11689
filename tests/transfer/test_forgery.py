"""Someone who can write to a storage location but holds no key: what they put there is
refused, because a restore, a dry run and `verify` believe the event store, not the files
beside the archive. Each of these tests fails on the code before the archive seal."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from api.cli import main as cli_main
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.keys import KEY_A, KEYS_A, VAULT
from transfer.archive.format import ArchiveWriter
from transfer.storage.layout import manifest_key

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the event store's kind plays no part


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPLEDGER_TEST_KEY_A", KEY_A)


def _forged_plaintext(collections: dict[str, list[bytes]], header: dict) -> tuple[bytes, bytes]:
    """A well-formed plaintext archive and its manifest, as an attacker would write them."""
    sink = io.BytesIO()

    class Sink:
        def write(self, data: bytes) -> int:
            return sink.write(data)

        def commit(self) -> None:
            pass

        def abort(self) -> None:
            pass

    writer = ArchiveWriter(Sink())
    for name, lines in collections.items():
        writer.add_collection(name, lines)
    manifest, _, _ = writer.finish({"source_kind": "ndjson", **header})
    return sink.getvalue(), manifest


def _restore(client, snapshot_id: str, **options) -> dict:
    r = client.post("/api/v1/restores", json={"snapshot_id": snapshot_id, "target": "scratch", **options})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    return wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))


def _vault_config(make_config, tmp_path: Path):
    config = make_config(storages=VAULT.format(url="vault", extra="", keys=KEYS_A))
    root = config.storages["vault"].path
    assert root is not None
    return config, root


def test_a_plaintext_forgery_of_an_encrypted_snapshot_is_refused(make_config, client_for, keys_env, tmp_path):
    config, root = _vault_config(make_config, tmp_path)
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client, storage="vault"))
    key = f"nightly/{snap['file_name']}"
    body, manifest = _forged_plaintext({"orders": [b'{"_id": "forged"}\n']}, {"snapshot_id": snap["id"]})
    (root / key).write_bytes(body)
    (root / manifest_key(key)).write_bytes(manifest)
    for options in ({}, {"dry_run": True}):
        restore = _restore(client, snap["id"], **options)
        assert restore["status"] == "failed" and "not the one recorded" in restore["error"], restore
    scratch = config.targets["scratch"].path
    assert not scratch.exists() or not any(scratch.iterdir())  # nothing written
    code = cli_main(["--config", str(tmp_path / "snapledger.toml"), "snapshot", "verify", snap["id"]])
    assert code == 1


def test_an_archive_swapped_for_another_of_the_same_location_is_refused(
    make_config, client_for, keys_env, tmp_path
):
    config, root = _vault_config(make_config, tmp_path)
    client = client_for(config)
    pid = create_policy(client, storage="vault")
    first, second, third = (completed_snapshot(client, pid) for _ in range(3))
    a, b, c = (f"nightly/{s['file_name']}" for s in (first, second, third))
    # A genuine archive and its manifest, copied over another snapshot's.
    (root / a).write_bytes((root / b).read_bytes())
    (root / manifest_key(a)).write_bytes((root / manifest_key(b)).read_bytes())
    restore = _restore(client, first["id"])
    assert restore["status"] == "failed" and "not the one recorded" in restore["error"], restore
    # The body alone, the right manifest left in place: the ciphertext is bound to the key
    # and snapshot it was written for (AEAD data), so its first segment fails.
    (root / c).write_bytes((root / b).read_bytes())
    restore = _restore(client, third["id"])
    assert restore["status"] == "failed" and "fails authentication" in restore["error"], restore
    assert _restore(client, second["id"])["status"] == "completed"


def test_a_tampered_manifest_with_recomputed_checksums_is_refused(make_config, client_for, tmp_path):
    """Plaintext location: the attacker rewrites a member and recomputes every checksum in
    the manifest (and the embedded copy): only the event store's record tells."""
    config = make_config()
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client))
    root = config.storages["local"].path
    key = f"nightly/{snap['file_name']}"
    body, manifest = _forged_plaintext(
        {"orders": [b'{"_id": "forged"}\n'], "customers": [b"{}\n"], "events": [b"{}\n"]},
        {"snapshot_id": snap["id"]},
    )
    (root / key).write_bytes(body)
    (root / manifest_key(key)).write_bytes(manifest)
    restore = _restore(client, snap["id"])
    assert restore["status"] == "failed" and "not the one recorded" in restore["error"], restore
    code = cli_main(["--config", str(tmp_path / "snapledger.toml"), "snapshot", "verify", snap["id"]])
    assert code == 1


def test_an_archive_changed_after_its_manifest_is_caught_by_its_recorded_checksum(
    make_config, client_for, tmp_path
):
    """The manifest left as it was, the archive's tail changed (bytes after the last
    member): no member checksum covers them, the recorded SHA-256 of the object does."""
    config = make_config()
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client))
    path = config.storages["local"].path / f"nightly/{snap['file_name']}"
    data = path.read_bytes()
    path.write_bytes(data + b"\0" * 512)
    restore = _restore(client, snap["id"])
    assert restore["status"] == "failed" and "SHA-256 differs" in restore["error"], restore
    assert hashlib.sha256(data).hexdigest() == snap["sha256"]


def test_a_modified_postgresql_schema_member_never_runs(make_config, client_for, tmp_path):
    """The forged schema would run as SQL on the target; the archive is refused first."""
    from tests.support import pgdb

    with pgdb.databases("src", "dst") as (src, dst):
        with pgdb.connect(src) as c:
            c.execute("CREATE TABLE public.t (v int); INSERT INTO public.t VALUES (1)")
        config = make_config(
            extra=f"""
[sources.pg]
kind = "postgresql"
url = "{pgdb.url(src)}"
[targets.copy]
kind = "postgresql"
url = "{pgdb.url(dst)}"
"""
        )
        client = client_for(config)
        snap = completed_snapshot(client, create_policy(client, name="pg", source="pg"))
        root = config.storages["local"].path
        key = f"pg/{snap['file_name']}"
        with tarfile.open(root / key) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        manifest = json.loads((root / manifest_key(key)).read_text())
        forged = io.BytesIO()
        with tarfile.open(fileobj=forged, mode="w", format=tarfile.PAX_FORMAT) as out:
            for member, data in members:
                if member.name == "schema/load.psql":
                    data = data.replace(
                        b"\\set ON_ERROR_STOP 1", b"\\set ON_ERROR_STOP 1\nCREATE TABLE pwned ();"
                    )
                    manifest["schema"]["load.psql"].update(
                        sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
                    )
                if member.name == "manifest.json":
                    data = json.dumps(manifest).encode()
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
        (root / key).write_bytes(forged.getvalue())
        (root / manifest_key(key)).write_text(json.dumps(manifest))
        r = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "copy"})
        restore = wait_for(
            client, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
        )
        assert restore["status"] == "failed" and "not the one recorded" in restore["error"], restore
        assert pgdb.user_objects(dst) == []


def test_a_versioned_bucket_restores_the_recorded_versions_whatever_was_written_over_them(
    make_config, client_for, s3_endpoint, bucket
):
    """The completion records the S3 VersionIds of archive and manifest: an overwrite (a
    new version) is not what a restore reads, so the snapshot stays restorable."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    storages = (
        f'[storages.s3]\nurl = "s3://{bucket}/team"\nendpoint_url = "{s3_endpoint}"\nregion = "us-east-1"\n'
    )
    config = make_config(storages=storages)
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client, storage="s3"))
    key = f"team/nightly/{snap['file_name']}"
    body, manifest = _forged_plaintext({"orders": [b'{"_id": "forged"}\n']}, {"snapshot_id": snap["id"]})
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=manifest)
    restore = _restore(client, snap["id"])
    assert restore["status"] == "completed", restore
    scratch = config.targets["scratch"].path
    assert b"forged" not in (scratch / "orders.ndjson").read_bytes()
    assert sum(1 for _ in (scratch / "orders.ndjson").open("rb")) == 2600
