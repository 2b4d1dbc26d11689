"""A policy's continuous capture: the option, checked where it is given, and the capture
window it opens, recorded as events an operator can read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.application import Snapledger
from domain.errors import Conflict, InvalidTransition, InvalidValue
from domain.ledger import Catalog
from projections.eventlog import EventLog


@pytest.fixture
def app() -> Snapledger:
    catalog = Catalog(
        frozenset({"pg", "files", "mongo"}),
        frozenset({"local"}),
        frozenset({"scratch"}),
        source_kinds={"pg": "postgresql", "files": "ndjson", "mongo": "mongodb"},
    )
    return Snapledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}, catalog)


def _policy(app: Snapledger, **extra: object) -> str:
    return str(app.create_policy({"name": "live", "source": "pg", "storage": "local", **extra}, "ops").id)


def test_continuous_takes_true_or_its_settings_and_names_what_is_wrong(app):
    assert app.get_policy(_policy(app)).continuous is None
    app2 = app
    pid = str(
        app2.create_policy({"name": "on", "source": "pg", "storage": "local", "continuous": True}, "ops").id
    )
    assert app2.get_policy(pid).continuous == {
        "segment_seconds": 60, "segment_bytes": 16 * 1024 * 1024, "max_slot_wal_mb": 1024,
    }  # fmt: skip
    app.edit_policy(pid, {"continuous": {"segment_seconds": "15s", "max_slot_wal_mb": 64}}, "ops")
    assert app.get_policy(pid).continuous == {
        "segment_seconds": 15, "segment_bytes": 16 * 1024 * 1024, "max_slot_wal_mb": 64,
    }  # fmt: skip
    app.edit_policy(pid, {"continuous": False}, "ops")
    assert app.get_policy(pid).continuous is None
    for bad, field in [
        ({"segment_seconds": 60}, "continuous.segment_seconds"),  # a bare number has no unit
        ({"segment_seconds": "0s"}, "continuous.segment_seconds"),
        ({"segment_bytes": 10}, "continuous.segment_bytes"),
        ({"max_slot_wal_mb": "1GB"}, "continuous.max_slot_wal_mb"),
        ({"every": "1m"}, "continuous.every"),
        ("yes", "continuous"),
    ]:
        with pytest.raises(InvalidValue) as e:
            app.edit_policy(pid, {"continuous": bad}, "ops")
        assert e.value.field == field, bad


def test_continuous_capture_needs_a_postgresql_or_mongodb_source(app):
    with pytest.raises(Conflict, match="needs a PostgreSQL or MongoDB source; 'files' is ndjson") as e:
        app.create_policy({"name": "f", "source": "files", "storage": "local", "continuous": True}, "ops")
    assert e.value.field == "continuous"
    pid = _policy(app, continuous=True)
    with pytest.raises(Conflict, match="needs a PostgreSQL or MongoDB source"):
        app.edit_policy(pid, {"source": "files"}, "ops")
    app.edit_policy(pid, {"source": "mongo"}, "ops")  # a replica set's oplog is captured
    assert app.get_policy(pid).continuous is not None


def test_a_capture_window_records_its_segments_in_the_event_log(app):
    pid = _policy(app, continuous=True)
    sid = app.request_snapshot(pid, "ops").id
    with pytest.raises(InvalidTransition, match="has no continuous capture"):
        app.start_capture(_other := str(app.create_policy(
            {"name": "plain", "source": "pg", "storage": "local"}, "ops").id), sid, "s", "0/1")  # fmt: skip
    with pytest.raises(InvalidTransition, match="is not one of policy"):
        app.start_capture(pid, app.request_snapshot(_other, "ops").id, "s", "0/1")
    cid = app.start_capture(pid, sid, "snapledger_live", "0/16B3748").id
    capture = app.get_capture(cid)
    at = datetime.now(UTC).isoformat()
    segment = {"from_lsn": "0/16B3748", "to_lsn": "0/16C0000", "first_commit": at, "last_commit": at,
               "transactions": 2, "items": 5, "bytes": 2048, "sha256": "ab" * 32,
               "key": "live/changes/x"}  # fmt: skip
    capture.archived(segment)
    app.record(capture)
    again = app.get_capture(cid)
    assert again.position == "0/16C0000" and again.restorable_until == at and len(again.segments) == 1
    log = EventLog(app)
    messages = [e["message"] for e in log.global_page(0, 1000) if e["aggregate_id"] == str(cid)]
    assert messages[0].startswith("continuous capture started at 0/16B3748 (slot snapledger_live)")
    assert "2 transactions, 5 changes, 2.0 KiB, 0/16B3748 -> 0/16C0000" in messages[1]


def test_a_read_of_a_capture_does_not_copy_every_segment(app):
    """The capture loop reads its capture every tick, and the repository deep-copies what it
    hands out: the segments' records are shared, the list is not."""
    import copy

    pid = _policy(app, continuous=True)
    capture = app.get_capture(app.start_capture(pid, app.request_snapshot(pid, "ops").id, "s", "0/1").id)
    at = datetime.now(UTC).isoformat()
    capture.archived({"from_lsn": "0/1", "to_lsn": "0/2", "first_commit": at, "last_commit": at,
                      "transactions": 1, "items": 1, "bytes": 1, "sha256": "ab" * 32,
                      "key": "k"})  # fmt: skip
    clone = copy.deepcopy(capture)
    assert clone.segments == capture.segments and clone.segments is not capture.segments
    assert clone.segments[0] is capture.segments[0]
    clone.segments.append({})
    assert len(capture.segments) == 1


def test_a_lost_append_leaves_no_copy_ahead_of_the_store(app, monkeypatch):
    """The event store went away during an append: the recorder's copy, whose events were
    collected, is read again, so the next append is at the store's version, no gap."""
    from eventsourcing.persistence import OperationalError

    from service.capture_loop import StoredRecorder

    pid = _policy(app, continuous=True)
    cid = app.start_capture(pid, app.request_snapshot(pid, "ops").id, "s", "0/1").id
    recorder = StoredRecorder(app, app.get_capture(cid), "w1")
    at = datetime.now(UTC).isoformat()
    segment = {"from_lsn": "0/1", "to_lsn": "0/2", "first_commit": at, "last_commit": at,
               "transactions": 1, "items": 1, "bytes": 1, "sha256": "ab" * 32, "key": "k"}  # fmt: skip
    real = app.record

    def lost(*aggregates: object, **kw: object) -> int:
        monkeypatch.setattr(app, "record", real)
        raise OperationalError("connection lost")

    monkeypatch.setattr(app, "record", lost)
    with pytest.raises(OperationalError):
        recorder.archived(segment)
    assert recorder.position() == "0/1"  # as the store has it
    recorder.archived(segment)  # the step tried again
    stored = app.get_capture(cid)
    assert stored.position == "0/2" and stored.version == 2 and stored.holder == "w1"
