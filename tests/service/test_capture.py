"""A capture step against a real slot (tests/support/logical.py) and real storage: written,
recorded, then released; a kill between any two of those loses and doubles nothing; an
unreachable location alarms, then fails the capture and drops its slot before the source's
WAL passes the limit.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domain.capture import CAPTURE_FAILED, Capture
from domain.errors import InvalidTransition
from service.capture import CaptureFailed, CaptureSettings, CaptureTask, read_segment
from tests.support import logical
from tests.support.capture import Recorder
from tests.support.keys import RAW_A
from transfer.archive.crypto import Keyring
from transfer.sources.postgres import capture
from transfer.storage import LocalStorage
from transfer.storage.base import StorageError


@pytest.fixture
def source() -> Any:
    logical.require()
    with logical.database("step") as name:
        with psycopg.connect(logical.url(name), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            with capture.create_slot(logical.url(name), None, f"snapledger_{name}") as slot:
                pass
            yield conn, slot


def _capture(slot: capture.Slot) -> Capture:
    return Capture(policy_id=uuid.uuid4(), snapshot_id=uuid.uuid4(), source="s", storage="local",
                   slot=slot.name, from_position=slot.consistent_lsn)  # fmt: skip


def _write(conn: psycopg.Connection, first: int, count: int) -> None:
    for i in range(first, first + count):
        conn.execute("INSERT INTO t VALUES (%s, %s)", (i, f"v{i}"))  # one transaction each


def _archived_ids(storage: LocalStorage, agg: Capture, keyring: Any = None) -> list[int]:
    ids = []
    for facts in agg.segments:
        for txn in read_segment(storage, facts, keyring, capture_id=str(agg.id)):
            ids.extend(int(line.split("id[integer]:")[1].split()[0]) for line in txn.changes)
    return ids


def test_a_step_writes_records_then_releases(source, tmp_path: Path):
    conn, slot = source
    storage = LocalStorage("local", tmp_path / "store")
    agg = _capture(slot)
    task = CaptureTask(conn, slot.name, "nightly", storage, Recorder(agg), capture_id=str(agg.id))
    assert task.step().segment is None  # nothing yet

    _write(conn, 1, 3)
    first = task.step()
    assert first.segment is not None and first.segment["transactions"] == 3 and not first.more
    assert first.segment["from_lsn"] == slot.consistent_lsn
    assert capture.confirmed_lsn(conn, slot.name) == first.segment["to_lsn"] == agg.position
    assert (tmp_path / "store" / first.segment["key"]).is_file()
    assert task.step().segment is None

    _write(conn, 4, 2)
    second = task.step().segment
    assert second is not None and second["from_lsn"] == first.segment["to_lsn"]  # contiguous
    assert _archived_ids(storage, agg) == [1, 2, 3, 4, 5]
    assert agg.restorable_until == second["until_time"] >= second["last_commit"]


def test_segments_close_at_their_size_and_the_rest_follows_at_once(source, tmp_path: Path):
    conn, slot = source
    storage = LocalStorage("local", tmp_path / "store")
    agg = _capture(slot)
    settings = CaptureSettings(segment_bytes=200)  # about three of these one-row transactions
    task = CaptureTask(conn, slot.name, "nightly", storage, Recorder(agg), settings, capture_id=str(agg.id))
    _write(conn, 1, 10)
    steps = 0
    while True:
        result = task.step()
        steps += 1
        if not result.more:
            break
        assert result.lag_seconds is not None  # what waits has an age
    assert len(agg.segments) > 2 and steps == len(agg.segments)
    assert _archived_ids(storage, agg) == list(range(1, 11))


class _Unreachable(LocalStorage):
    def open_writer(self, key: str) -> Any:
        raise StorageError("storage location 'local' unreachable: connection refused")


@pytest.mark.parametrize("where", ["store", "record", "advance"])
def test_a_kill_between_write_record_and_release_loses_and_doubles_nothing(
    source, tmp_path, monkeypatch, where
):
    conn, slot = source
    storage = LocalStorage("local", tmp_path / "store")
    agg = _capture(slot)
    recorder = Recorder(agg)
    _write(conn, 1, 3)
    if where == "store":
        dead = CaptureTask(conn, slot.name, "nightly", _Unreachable("local", tmp_path / "store"), recorder)
    else:
        dead = CaptureTask(conn, slot.name, "nightly", storage, recorder, capture_id=str(agg.id))
    if where == "record":
        recorder.fail_next = True
    if where == "advance":
        monkeypatch.setattr(capture, "advance", _raise)
    with pytest.raises((StorageError, ConnectionError, RuntimeError)):
        dead.step()
    monkeypatch.undo()
    recorded = len(agg.segments)
    assert recorded == (1 if where == "advance" else 0)
    # The slot is never ahead of what storage holds and the events record.
    confirmed = capture.confirmed_lsn(conn, slot.name)
    assert confirmed == slot.consistent_lsn

    _write(conn, 4, 2)  # the source goes on meanwhile
    again = CaptureTask(conn, slot.name, "nightly", storage, recorder, capture_id=str(agg.id))
    while again.step().more:
        pass
    assert _archived_ids(storage, agg) == [1, 2, 3, 4, 5]  # each change once, in order
    assert capture.confirmed_lsn(conn, slot.name) == agg.position


def _raise(*_: Any) -> None:
    raise RuntimeError("killed before the slot moved")


def test_segments_are_contiguous_or_refused(source):
    _, slot = source
    agg = _capture(slot)
    facts = {"from_lsn": "0/1", "to_lsn": "0/2", "first_commit": "", "last_commit": "", "transactions": 1,
             "items": 1, "bytes": 1, "sha256": "0" * 64, "key": "k"}  # fmt: skip
    with pytest.raises(InvalidTransition, match="segment starts at 0/1, but the capture is at"):
        agg.archived(facts)
    agg.fail("stopped by the test")
    with pytest.raises(InvalidTransition, match="capture is failed"):
        agg.archived({**facts, "from_lsn": agg.position})


def test_an_encrypted_location_gets_encrypted_segments(source, tmp_path: Path):
    conn, slot = source
    storage = LocalStorage("local", tmp_path / "store")
    keyring = Keyring("local", "k-2026", {"k-2026": RAW_A})
    agg = _capture(slot)
    task = CaptureTask(
        conn, slot.name, "nightly", storage, Recorder(agg), keyring=keyring, capture_id=str(agg.id)
    )
    _write(conn, 1, 2)
    facts = task.step().segment
    assert facts is not None and facts["encryption"]["key_id"] == keyring.key_id
    stored = (tmp_path / "store" / facts["key"]).read_bytes()
    assert b"id[integer]" not in stored and stored.startswith(b"SNAPLENC")
    assert _archived_ids(storage, agg, keyring) == [1, 2]


def test_unreachable_storage_alarms_then_ends_the_capture_and_drops_its_slot(source, tmp_path: Path):
    conn, slot = source
    agg = _capture(slot)
    recorder = Recorder(agg)
    conn.execute("INSERT INTO t SELECT i, repeat('w', 500) FROM generate_series(1, 4000) i")  # > 1 MiB of WAL
    retained = capture.retained_wal_bytes(conn, slot.name)
    assert retained is not None and retained > 1024 * 1024
    limit = math.floor(retained / (1024 * 1024)) + 1  # above what is held, at most twice it
    settings = CaptureSettings(max_slot_wal_mb=limit)
    task = CaptureTask(conn, slot.name, "nightly", _Unreachable("local", tmp_path), recorder, settings)
    with pytest.raises(StorageError, match="unreachable"):
        task.step()
    held, alarm = task.check()
    assert alarm is not None and "not keeping up" in alarm and agg.status != CAPTURE_FAILED
    assert capture.confirmed_lsn(conn, slot.name) == slot.consistent_lsn  # nothing released

    more = 4000 + 8000 * limit  # twice the limit again, at least
    conn.execute("INSERT INTO t SELECT i, repeat('w', 500) FROM generate_series(4001, %s) i", (more,))
    with pytest.raises(CaptureFailed, match=f"past max_slot_wal_mb = {limit}.*slot dropped"):
        task.step()
    assert agg.status == CAPTURE_FAILED and "max_slot_wal_mb" in (agg.reason or "")
    assert capture.retained_wal_bytes(conn, slot.name) is None  # the source keeps no WAL for it


def test_an_idle_source_stays_restorable_to_now_with_a_bounded_record(source, tmp_path: Path):
    conn, slot = source
    agg = _capture(slot)
    storage = LocalStorage("local", tmp_path / "store")
    _write(conn, 1, 1)
    task = CaptureTask(
        conn, slot.name, "nightly", storage, Recorder(agg), CaptureSettings(checkpoint_seconds=3600)
    )
    segment = task.step().segment
    assert segment is not None and segment["until_time"] >= segment["last_commit"]  # seen up to the peek
    events = len(agg.pending_events)
    for _ in range(5):
        assert task.step().segment is None
    assert len(agg.pending_events) == events  # idle steps within the interval record nothing

    eager = CaptureTask(
        conn, slot.name, "nightly", storage, Recorder(agg), CaptureSettings(checkpoint_seconds=0)
    )
    before = agg.restorable_until
    conn.execute("SELECT pg_sleep(0.01)")
    eager.step()
    assert agg.restorable_until is not None and before is not None and agg.restorable_until > before
    assert capture.lsn_value(agg.checked_lsn) >= capture.lsn_value(segment["to_lsn"])
    assert agg.position == segment["to_lsn"]  # a check moves no segment boundary


def _s3(s3_endpoint: str, bucket: str, locked: bool) -> Any:
    import boto3

    from transfer.storage.s3 import S3Storage

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket, ObjectLockEnabledForBucket=locked
    )
    return S3Storage("vault", bucket, "p", endpoint_url=s3_endpoint, region="us-east-1",
                     lock_mode="compliance", lock_days=3)  # fmt: skip


def test_an_object_lock_location_locks_each_segment_or_records_none(source, s3_endpoint):
    import boto3

    conn, slot = source
    agg = _capture(slot)
    storage = _s3(s3_endpoint, f"lock-{uuid.uuid4().hex[:10]}", locked=True)
    _write(conn, 1, 2)
    facts = CaptureTask(conn, slot.name, "nightly", storage, Recorder(agg)).step().segment
    assert facts is not None
    head = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").head_object(
        Bucket=storage.bucket, Key=storage.full_key(facts["key"])
    )
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=3) - timedelta(minutes=5)
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete(facts["key"])  # not even with the bucket's credentials

    # A location that says it locks but cannot: the segment is removed again, unrecorded,
    # and the slot keeps the changes.
    other = _capture(slot)
    unlockable = _s3(s3_endpoint, f"nolock-{uuid.uuid4().hex[:10]}", locked=False)
    _write(conn, 3, 1)
    with pytest.raises(StorageError, match="object lock"):
        CaptureTask(conn, slot.name, "nightly", unlockable, Recorder(other)).step()
    assert other.segments == [] and list(unlockable.list_objects()) == []
    assert capture.confirmed_lsn(conn, slot.name) == agg.position


def test_a_change_of_shape_while_no_worker_ran_still_ends_the_window(source, tmp_path: Path):
    """Each segment records the tables it first saw, with their columns; the task a new
    worker makes starts from them, so DDL made while no capture ran is caught at capture."""
    from service.capture import shapes_of

    conn, slot = source
    storage = LocalStorage("local", tmp_path / "store")
    agg = _capture(slot)
    task = CaptureTask(conn, slot.name, "nightly", storage, Recorder(agg), capture_id=str(agg.id))
    _write(conn, 1, 2)
    first = task.step().segment
    assert first is not None and first["shapes"] == [
        {"table": ["public", "t"], "columns": [["id", "integer"], ["v", "text"]]}
    ]
    _write(conn, 3, 1)
    assert "shapes" not in (task.step().segment or {})  # each table once per window
    conn.execute("ALTER TABLE t ADD COLUMN w int")  # the worker is gone meanwhile
    conn.execute("INSERT INTO t VALUES (10, 'after', 1)")
    again = CaptureTask(
        conn,
        slot.name,
        "nightly",
        storage,
        Recorder(agg),
        capture_id=str(agg.id),
        shapes=shapes_of(agg.segments),
    )
    result = again.step()
    assert result.segment is None and "public.t changed shape" in (result.reshaped or "")
    assert _archived_ids(storage, agg) == [1, 2, 3]
