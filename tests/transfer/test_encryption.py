"""Client-side encryption: what an operator relies on when archives leave the process sealed.

The segment format (boundaries, tampering, truncation, reordering), keys from the
environment only, round trips through the worker on local storage and S3, a wrong or
missing key refused before a target is touched, and the README's by-hand recipe.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import httpx
import pytest
from starlette.testclient import TestClient

from api.cli import main
from api.config import DEMO_DATA, Config, ConfigError, load_config
from api.http import create_app
from api.runtime import Runtime
from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.keys import KEY_A, KEY_B, KEYS_A, RAW_A, RAW_B, VAULT
from transfer.archive.crypto import (
    MAGIC,
    DecryptingReader,
    DecryptionError,
    EncryptionKeyError,
    Keyring,
    parse_key,
)
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.runs.verify import verify_archive
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.storage import ArchiveWriter, LocalStorage, S3Storage
from transfer.storage.layout import manifest_key

README = Path(__file__).resolve().parents[2] / "README.md"
KEY_TEXTS = (KEY_A, KEY_B, RAW_A.hex(), base64.b64encode(RAW_B).decode())


def _keyring(key_id: str = "k1", key: bytes = RAW_A, **older: bytes) -> Keyring:
    return Keyring("vault", key_id, {key_id: key, **older})


def _noop(*args: object) -> None:
    pass


def _never() -> bool:
    return False


def _no_key_in(text: str) -> None:
    for secret in KEY_TEXTS:
        assert secret not in text


# ------------------------------------------------------------ the segment format
class _Sink(ArchiveWriter):
    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.committed = self.aborted = False

    def write(self, data: bytes) -> int:
        return self.data.write(data)

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


def _seal(data: bytes, segment: int = 16, keyring: Keyring | None = None) -> tuple[bytes, int]:
    sink = _Sink()
    writer = (keyring or _keyring()).encrypting(sink, segment)
    writer.write(data)
    writer.commit()
    assert sink.committed
    assert writer.bytes_written == len(sink.data.getvalue())
    assert writer.sha256 == hashlib.sha256(sink.data.getvalue()).hexdigest()
    return sink.data.getvalue(), len(writer.header)


def _unseal(blob: bytes, keyring: Keyring | None = None, read_size: int = -1) -> bytes:
    reader = DecryptingReader(io.BytesIO(blob), keyring or _keyring())
    if read_size < 0:
        return reader.read()
    parts = []
    while chunk := reader.read(read_size):
        assert len(chunk) <= read_size
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 33, 48, 100])
def test_round_trip_at_every_segment_boundary(size: int) -> None:
    """Empty input, exact multiples of the segment size and one byte over."""
    data = os.urandom(size)
    blob, header = _seal(data)
    segments = max(1, -(-size // 16))  # the last segment is never empty unless all is
    assert len(blob) == header + size + 16 * segments
    assert blob.startswith(MAGIC) and data[:16] not in blob[header:] or size < 16
    for read_size in (-1, 1, 7, 16, 1000):
        assert _unseal(blob, read_size=read_size) == data


def test_writer_streams_full_segments_through_and_holds_only_the_last() -> None:
    sink = _Sink()
    writer = _keyring().encrypting(sink, 1024)
    header = len(writer.header)
    for _ in range(10 * 1024 + 1):
        writer.write(b"x")
    assert len(sink.data.getvalue()) == header + 10 * (1024 + 16)  # nothing whole waits in memory
    writer.write(b"y" * 1023)
    assert len(sink.data.getvalue()) == header + 10 * (1024 + 16)  # a full last segment waits
    writer.commit()
    assert _unseal(sink.data.getvalue()) == b"x" * (10 * 1024 + 1) + b"y" * 1023
    writer2 = _keyring().encrypting(_Sink(), 1024)
    writer2.abort()
    assert writer2.sink.aborted  # type: ignore[attr-defined]


def test_every_flipped_bit_is_detected() -> None:
    blob, _ = _seal(b"0123456789" * 5)
    for offset in range(len(blob)):
        damaged = bytearray(blob)
        damaged[offset] ^= 0x01
        with pytest.raises((DecryptionError, EncryptionKeyError)):
            _unseal(bytes(damaged))


def test_truncation_and_reordering_are_detected() -> None:
    blob, header = _seal(b"a" * 16 + b"b" * 16 + b"c" * 5)
    seg = [blob[header + i * 32 : header + (i + 1) * 32] for i in range(2)] + [blob[header + 64 :]]
    head = blob[:header]
    with pytest.raises(DecryptionError, match="truncated: it ends after segment 1"):
        _unseal(head + seg[0] + seg[1])
    with pytest.raises(DecryptionError, match="truncated: it ends before segment 0"):
        _unseal(head)
    with pytest.raises(DecryptionError, match="segment 2 fails authentication"):
        _unseal(blob[:-1])
    with pytest.raises(DecryptionError, match="segment 0 fails authentication"):
        _unseal(head + seg[1] + seg[0] + seg[2])
    with pytest.raises(DecryptionError, match="segment 1 fails authentication"):
        _unseal(head + seg[0] + seg[2])
    with pytest.raises(DecryptionError, match="truncated inside its header"):
        _unseal(head[:-3])
    with pytest.raises(DecryptionError, match="not an encrypted snapledger archive"):
        _unseal(b"plain tar bytes" * 10)
    other, _ = _seal(b"a" * 16 + b"b" * 16 + b"c" * 5)  # same key, another archive's segment
    with pytest.raises(DecryptionError, match="segment 1 fails authentication"):
        _unseal(head + seg[0] + other[header + 32 : header + 64] + seg[2])


def test_wrong_unknown_and_rotated_keys() -> None:
    blob, _ = _seal(b"payload" * 100)
    with pytest.raises(EncryptionKeyError, match="'k1' for storage location 'vault' does not decrypt") as e:
        _unseal(blob, _keyring(key=RAW_B))
    _no_key_in(str(e.value))
    with pytest.raises(EncryptionKeyError, match="encrypted with key 'k1', which storage location 'vault'"):
        _unseal(blob, _keyring("k2", RAW_B))
    rotated = _keyring("k2", RAW_B, k1=RAW_A)  # new archives with k2, old ones still readable
    assert _unseal(blob, rotated) == b"payload" * 100
    assert "k2" in str(rotated) and RAW_B.hex() not in repr(rotated) and str(RAW_B) not in repr(rotated)


def test_keys_parse_from_hex_and_base64_only_at_256_bits() -> None:
    assert parse_key(KEY_A) == parse_key(KEY_A.rstrip("=")) == RAW_A
    assert parse_key(base64.urlsafe_b64encode(RAW_B).decode()) == parse_key(KEY_B) == RAW_B
    for bad in (RAW_A.hex()[:-2], base64.b64encode(RAW_A[:31]).decode(), "not a key at all", ""):
        with pytest.raises(ValueError) as e:
            parse_key(bad)
        assert bad not in str(e.value) or not bad


# --------------------------------------------------------------------- pipeline
def test_s3_multipart_encrypted_round_trip(s3_endpoint, bucket, big_source, tmp_path) -> None:
    storage = S3Storage(
        "vault", bucket, "pre", s3_endpoint, "us-east-1", part_size=5 << 20, concurrency=3, path_style=True
    )
    keyring = _keyring()
    result = run_backup(
        NdjsonSource("big", big_source), storage, "a/b.tar", [], [], {}, _noop, _never, keyring=keyring
    )
    body = (
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        .get_object(Bucket=bucket, Key="pre/a/b.tar")["Body"]
        .read()
    )
    assert len(body) == result.bytes > 15 << 20  # several parts, uploaded in parallel
    assert hashlib.sha256(body).hexdigest() == result.sha256  # the record describes the stored object
    assert body.startswith(MAGIC)
    with tarfile.open(fileobj=DecryptingReader(io.BytesIO(body), keyring), mode="r|") as tar:
        assert [m.name for m in tar] == ["data/events.ndjson.gz", "manifest.json"]
    assert verify_archive(storage, "a/b.tar", keyring=keyring).items == 40_000
    restored = run_restore(
        storage, "a/b.tar", NdjsonTarget("t", tmp_path), [], _noop, _never, keyring=keyring
    )
    assert restored.items == 40_000
    assert (tmp_path / "events.ndjson").read_bytes() == (big_source / "events.ndjson").read_bytes()


def test_every_restore_checks_the_key_before_opening_the_target(tmp_path) -> None:
    storage = LocalStorage("vault", tmp_path / "store")
    run_backup(
        NdjsonSource("demo", DEMO_DATA), storage, "p/x.tar", [], [], {}, _noop, _never, keyring=_keyring()
    )

    class Untouchable:
        def __init__(self, transactional: bool) -> None:
            self.transactional = transactional

        def open(self, *args: object) -> None:
            raise AssertionError("the target was opened")

    for transactional in (True, False):
        for dry_run in (True, False):
            with pytest.raises(EncryptionKeyError, match="does not decrypt"):
                run_restore(
                    storage,
                    "p/x.tar",
                    Untouchable(transactional),
                    [],
                    _noop,
                    _never,
                    dry_run=dry_run,
                    keyring=_keyring(key=RAW_B),
                )
        with pytest.raises(EncryptionKeyError, match="has no encryption keys configured"):
            run_restore(storage, "p/x.tar", Untouchable(transactional), [], _noop, _never)
    result = run_restore(
        storage, "p/x.tar", Untouchable(True), [], _noop, _never, dry_run=True, keyring=_keyring()
    )
    assert result.items == 3650


# ------------------------------------------------------ through the worker and API


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPLEDGER_TEST_KEY_A", KEY_A)
    monkeypatch.setenv("SNAPLEDGER_TEST_KEY_B", KEY_B)


@contextmanager
def serving(config: Config) -> Iterator[TestClient]:
    """One process at a time: a runtime with other keys must not share the work."""
    with TestClient(create_app(Runtime.build(config)), raise_server_exceptions=True) as client:
        yield client


def _vault(request: pytest.FixtureRequest, where: str, keys: str = KEYS_A) -> str:
    if where == "local":
        return VAULT.format(url="vault", extra="", keys=keys)
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket")
    return VAULT.format(url=f"s3://{bucket}/team", extra=f'endpoint_url = "{endpoint}"', keys=keys)


def _stored(config: Config, key: str) -> bytes:
    spec = config.storages["vault"]
    if spec.kind == "local":
        assert spec.path is not None
        return (spec.path / key).read_bytes()
    s3 = boto3.client("s3", endpoint_url=spec.endpoint_url, region_name="us-east-1")
    return s3.get_object(Bucket=spec.bucket, Key=f"{spec.prefix}/{key}")["Body"].read()


def _archive_key(snap: dict) -> str:
    return f"nightly/{snap['file_name']}"  # <policy>/<file name>


def _restore(client: TestClient, snapshot_id: str, **options: object) -> dict:
    r = client.post("/api/v1/restores", json={"snapshot_id": snapshot_id, "target": "scratch", **options})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    return wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))


@pytest.mark.parametrize("backend", ["sqlite"])  # the event store plays no part in encryption
@pytest.mark.parametrize("where", ["local", "s3"])
def test_encrypted_round_trip_through_the_worker(where, make_config, keys_env, request) -> None:
    config = make_config(storages=_vault(request, where))
    with serving(config) as client:
        snap = completed_snapshot(client, create_policy(client, storage="vault"))
        assert snap["status"] == "completed", snap["error"]
        key = _archive_key(snap)
        body = _stored(config, key)
        assert body.startswith(MAGIC) and b"ndjson" not in body
        assert hashlib.sha256(body).hexdigest() == snap["sha256"] and len(body) == snap["transferred_bytes"]
        r = client.get(snap["download_url"], follow_redirects=False)
        download = httpx.get(r.headers["location"]).content if where == "s3" else r.content
        assert download == body  # the download is the ciphertext, as the README says

        manifest = json.loads(_stored(config, manifest_key(key)))
        assert manifest["encryption"] == {
            "algorithm": "AES-256-GCM",
            "key_wrap": "AES-256-KW",
            "key_id": "vault-2026",
            "segment_bytes": 1 << 20,
            "aad": "archive-key+snapshot-id",  # bound to its key and snapshot (format 2)
        }
        assert body[8] == 2
        assert manifest["items"] == 3650  # the sidecar stays readable without the key

        dry = _restore(client, snap["id"], dry_run=True)
        assert dry["status"] == "completed", dry["error"]
        restore = _restore(client, snap["id"])
        assert restore["status"] == "completed", restore["error"]
        for name in ("customers", "orders", "products"):
            assert (config.targets["scratch"].path / f"{name}.ndjson").read_bytes() == (
                DEMO_DATA / f"{name}.ndjson"
            ).read_bytes()
        everything = json.dumps(
            [client.get("/api/v1/events?limit=500").json(), client.get("/api/v1/backups").json(), manifest]
        )
        _no_key_in(everything + body.decode("latin-1"))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_wrong_or_missing_key_fails_the_restore_before_anything_is_written(make_config, keys_env, request):
    with serving(make_config(storages=_vault(request, "local"))) as client:
        snap = completed_snapshot(client, create_policy(client, storage="vault"))
        assert snap["status"] == "completed", snap["error"]
    scratch = make_config().targets["scratch"].path
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "orders.ndjson").write_text('{"kept": true}\n')
    before = {p.name: p.read_bytes() for p in scratch.iterdir()}

    wrong = 'encryption_key_id = "vault-2026"\nencryption_key_env = "SNAPLEDGER_TEST_KEY_B"'
    rotated_without_old = 'encryption_key_id = "vault-2027"\nencryption_key_env = "SNAPLEDGER_TEST_KEY_B"'
    for keys, reason in (
        (wrong, "the key configured as 'vault-2026' for storage location 'vault' does not decrypt"),
        ("", "encrypted with key 'vault-2026', but storage location 'vault' has no encryption keys"),
        (
            rotated_without_old,
            "encrypted with key 'vault-2026', which storage location 'vault' does not have",
        ),
    ):
        with serving(make_config(storages=_vault(request, "local", keys))) as client:
            for dry_run in (False, True):
                restore = _restore(client, snap["id"], dry_run=dry_run)
                assert restore["status"] == "failed"
                assert reason in restore["error"] and restore["error"].startswith("EncryptionKeyError")
                _no_key_in(json.dumps(restore))
        assert {p.name: p.read_bytes() for p in scratch.iterdir()} == before

    rotated = rotated_without_old + '\ndecryption_keys_env = { "vault-2026" = "SNAPLEDGER_TEST_KEY_A" }'
    config = make_config(storages=_vault(request, "local", rotated))
    with serving(config) as client:
        assert _restore(client, snap["id"])["status"] == "completed"  # the old key still reads
        newer = completed_snapshot(client, snap["policy_id"])
        manifest = json.loads(_stored(config, manifest_key(_archive_key(newer))))
        assert manifest["encryption"]["key_id"] == "vault-2027"  # new archives use the new key
    assert (scratch / "orders.ndjson").read_bytes() == (DEMO_DATA / "orders.ndjson").read_bytes()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_verify_tells_damage_from_a_key_problem(make_config, keys_env, request, capsys) -> None:
    config = make_config(storages=_vault(request, "local"))
    with serving(config) as client:
        snap = completed_snapshot(client, create_policy(client, storage="vault"))
        key = _archive_key(snap)
    path = str(Path(config.data_dir).parent / "snapledger.toml")
    archive = config.storages["vault"].path / key  # type: ignore[operator]
    intact = archive.read_bytes()

    assert main(["--config", path, "snapshot", "verify", snap["id"]]) == 0
    assert "OK nightly#1" in capsys.readouterr().out

    archive.write_bytes(
        intact[: len(intact) // 2] + bytes([intact[len(intact) // 2] ^ 1]) + intact[len(intact) // 2 + 1 :]
    )
    assert main(["--config", path, "snapshot", "verify", snap["id"]]) == 1
    assert "fails authentication" in capsys.readouterr().out

    archive.write_bytes(intact[:-100])
    assert main(["--config", path, "snapshot", "verify", snap["id"]]) == 1
    assert "DAMAGED nightly#1" in capsys.readouterr().out

    archive.write_bytes(intact)
    make_config(storages=_vault(request, "local", KEYS_A.replace("KEY_A", "KEY_B")))
    assert main(["--config", path, "snapshot", "verify", snap["id"]]) == 2
    err = capsys.readouterr().err
    assert "cannot verify nightly#1" in err and "does not decrypt" in err
    _no_key_in(err)


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "keys, message",
    [
        (
            'encryption_key_env = "SNAPLEDGER_TEST_KEY_A"',
            "storages.vault.encryption_key_id must name the key",
        ),
        ('encryption_key_id = "k1"', "storages.vault.encryption_key_env must name the variable"),
        (
            'encryption_key_id = "k1"\nencryption_key_env = "SNAPLEDGER_TEST_UNSET"',
            "storages.vault.encryption_key_env: environment variable SNAPLEDGER_TEST_UNSET is not set",
        ),
        (
            'encryption_key_id = "k1"\nencryption_key_env = "SNAPLEDGER_TEST_SHORT"',
            "storages.vault.encryption_key_env: the key in SNAPLEDGER_TEST_SHORT must be 32 bytes",
        ),
        (f'encryption_key = "{KEY_A}"', "storages.vault.encryption_key: put keys in environment variables"),
        (
            'encryption_key_id = "has space"\nencryption_key_env = "SNAPLEDGER_TEST_KEY_A"',
            "storages.vault.encryption_key_id must be a key id",
        ),
        (
            'decryption_keys_env = ["SNAPLEDGER_TEST_KEY_A"]',
            "storages.vault.decryption_keys_env must be a table",
        ),
        (
            'decryption_keys_env = { old = "SNAPLEDGER_TEST_SHORT" }',
            "storages.vault.decryption_keys_env.old: the key in SNAPLEDGER_TEST_SHORT must be 32 bytes",
        ),
        (
            'encryption_key_id = "k1"\nencryption_key_env = "SNAPLEDGER_TEST_KEY_A"\n'
            'decryption_keys_env = { k1 = "SNAPLEDGER_TEST_KEY_B" }',
            "'k1' is already the encryption key's id",
        ),
    ],
)
def test_bad_encryption_settings_stop_startup_naming_the_field(
    keys, message, tmp_path, keys_env, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SNAPLEDGER_TEST_SHORT", base64.b64encode(RAW_A[:16]).decode())
    path = tmp_path / "bad.toml"
    path.write_text(VAULT.format(url="vault", extra="", keys=keys))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)
    _no_key_in(str(e.value))
    assert main(["--config", str(path), "policy", "list"]) == 2
    assert message in capsys.readouterr().err


def test_keys_are_redaction_secrets_and_absent_from_the_config_repr(tmp_path, keys_env) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        VAULT.format(
            url="vault", extra="", keys=KEYS_A + '\ndecryption_keys_env = { old = "SNAPLEDGER_TEST_KEY_B" }'
        )
    )
    config = load_config(path)
    keyring = config.storages["vault"].keyring
    assert (
        keyring is not None and keyring.key_id == "vault-2026" and set(keyring.keys) == {"vault-2026", "old"}
    )
    assert KEY_A in config.secrets and KEY_B in config.secrets
    _no_key_in(repr(config))
    assert str(RAW_A) not in repr(config)


# ------------------------------------------------------------------ the README
def _recipe() -> str:
    section = README.read_text().split("## Encryption", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Encryption section has one Python recipe"
    return blocks[0]


def test_the_readme_recipe_decrypts_a_real_archive(tmp_path: Path) -> None:
    storage = LocalStorage("vault", tmp_path / "store")
    keyring = _keyring("offsite-2026")
    run_backup(
        NdjsonSource("demo", DEMO_DATA), storage, "p/x.tar", [], [], {}, _noop, _never, keyring=keyring
    )
    recipe = tmp_path / "decrypt.py"
    recipe.write_text(_recipe())
    archive = storage.path("p/x.tar")
    with open(archive, "rb") as stdin:
        run = subprocess.run(
            [sys.executable, str(recipe)],
            stdin=stdin,
            capture_output=True,
            env={**os.environ, "SNAPLEDGER_KEY": KEY_A},
            check=True,
            timeout=60,
        )
    plain = run.stdout
    with DecryptingReader(open(archive, "rb"), keyring) as ours:  # noqa: SIM115
        assert plain == ours.read()
    manifest = json.loads(storage.get_bytes(manifest_key("p/x.tar")))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        for name, entry in manifest["collections"].items():
            member = tar.extractfile(entry["member"])
            assert member is not None
            data = member.read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert gzip.decompress(data) == (DEMO_DATA / f"{name}.ndjson").read_bytes()
    with open(archive, "rb") as stdin:
        wrong = subprocess.run(
            [sys.executable, str(recipe)],
            stdin=stdin,
            capture_output=True,
            env={**os.environ, "SNAPLEDGER_KEY": base64.b64encode(RAW_B).decode()},
            timeout=60,
        )
    assert wrong.returncode != 0 and not wrong.stdout


# -------------------------------------------------------- the event store at rest
EVENTS_KEY = '[database]\nencryption_key_env = "SNAPLEDGER_TEST_KEY_{}"\n'


@pytest.mark.parametrize("backend", ["sqlite"])  # the library's cipher is the same on PostgreSQL
def test_event_store_encryption_seals_each_event_and_refuses_the_wrong_key(make_config, keys_env, capsys):
    config = make_config(extra=EVENTS_KEY.format("A"))
    with serving(config) as client:
        pid = create_policy(client, name="confidential-payroll")
        assert completed_snapshot(client, pid)["status"] == "completed"
    assert config.database.path is not None
    with sqlite3.connect(config.database.path) as db:
        rows = db.execute("SELECT topic, state FROM stored_events").fetchall()
    assert len(rows) >= 4 and any("PolicyCreated" in topic for topic, _ in rows)
    assert not any(b"confidential-payroll" in state or b"demo" in state for _, state in rows)

    with serving(make_config(extra=EVENTS_KEY.format("A"))) as client:  # the same key reads them back
        events = client.get("/api/v1/events").json()["items"]
        assert any(e["data"].get("name") == "confidential-payroll" for e in events)
    path = str(config.data_dir.parent / "snapledger.toml")
    for extra, message in (
        ("", "they are encrypted, so set database.encryption_key_env"),
        (EVENTS_KEY.format("B"), "database.encryption_key_env: the event store's events cannot be decrypted"),
    ):
        with pytest.raises(ConfigError, match=message):
            Runtime.build(make_config(extra=extra))
        assert main(["--config", path, "policy", "list"]) == 2
        assert message.split(": ")[-1] in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_plaintext_event_store_is_not_silently_opened_with_a_key(make_config, keys_env) -> None:
    with serving(make_config()) as client:
        create_policy(client)
    with pytest.raises(ConfigError, match="written with another key, or without encryption"):
        Runtime.build(make_config(extra=EVENTS_KEY.format("A")))
