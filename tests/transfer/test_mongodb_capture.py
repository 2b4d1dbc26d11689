"""Continuous capture from MongoDB: a snapshot ends at a cluster time, the oplog after it is
archived as segments of whole transactions, and a restore to chosen moments equals the
source as it was at each, collection for collection.

Against the MongoDB test servers (tests/support/mongo.py): SecantusDB by default, one
replica set member with an oplog. Where a case cannot be shown on it (mongod's applyOps
chains of a large transaction), the entries are built as mongod writes them.
"""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from bson import Timestamp

from domain.capture import Capture
from service.capture import CaptureFailed, CaptureSettings, read_segment
from service.oplog_capture import OplogCaptureTask
from tests.support.capture import Recorder
from tests.support.mongo import database_names, secantus
from tests.transfer.test_mongodb import KEY, backup, canonical, url_of
from transfer.runs import point_in_time
from transfer.runs.restore import run_restore
from transfer.sources.mongodb import capture
from transfer.sources.mongodb.oplog import cluster_time
from transfer.sources.mongodb.target import MongoTarget
from transfer.storage import LocalStorage


def _task(client: Any, databases: list[str], storage: LocalStorage, start: str, **settings: Any) -> Any:
    import uuid

    agg = Capture(uuid.uuid4(), uuid.uuid4(), "mongo-src", "local", "", start)
    recorder = Recorder(agg)
    task = OplogCaptureTask(
        client, databases, "live", storage, recorder, recorder.checked_position,
        CaptureSettings(**{"checkpoint_seconds": 0, **settings}),
    )  # fmt: skip
    return task, agg


def _drain(task: Any) -> None:
    for _ in range(1000):
        if not task.step().more:
            return
    raise AssertionError("the capture never caught up")


def _moment(client: Any) -> datetime:
    """The wall clock of the newest oplog entry: the step just written."""
    newest = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    return datetime.fromisoformat(capture.wall_time(newest))


def _state(client: Any, databases: list[str]) -> dict[str, tuple[int, str]]:
    out = {}
    for db in databases:
        for coll in client[db].list_collection_names():
            if not coll.startswith("system."):
                out[f"{db}.{coll}"] = canonical(client, f"{db}.{coll}")
    return out


def _workload(client: Any, shop: str, crm: str, other: str) -> list[Any]:
    """Each step is one source transaction (a multi-document transaction, or one write)."""

    def transaction() -> None:
        with client.start_session() as session, session.start_transaction():
            client[shop]["orders"].insert_one({"_id": 9001, "n": 1, "lines": []}, session=session)
            client[crm]["customers"].update_one({"_id": 1}, {"$set": {"vip": True}}, session=session)
            client[shop]["orders"].delete_one({"_id": 3}, session=session)

    return [
        lambda: client[shop]["orders"].insert_one({"_id": 1000, "n": 0, "lines": [1, 2, 3]}),
        lambda: client[shop]["orders"].update_many({"_id": {"$lt": 10}}, {"$inc": {"n": 100}}),
        lambda: client[shop]["orders"].update_one({"_id": 1000}, {"$pop": {"lines": 1}, "$unset": {"n": ""}}),
        lambda: client[shop]["orders"].replace_one({"_id": 4}, {"whole": "new", "nested": {"a": None}}),
        transaction,
        lambda: client[other]["noise"].insert_one({"not": "captured"}),  # a database not captured
        lambda: client[shop].create_collection("fresh", capped=True, size=1 << 20),
        lambda: client[shop]["fresh"].insert_many([{"_id": i, "v": "é" * i} for i in range(30)]),
        lambda: client[shop]["fresh"].create_index([("v", 1)], name="v_1"),
        lambda: client[shop]["orders"].delete_many({"n": {"$gte": 100}}),  # TRUNCATE's like
        lambda: client[crm]["customers"].rename("clients"),
        lambda: client[crm]["clients"].insert_one({"_id": 77, "after": "rename"}),
        lambda: client[shop].drop_collection("scratch"),
    ]


@pytest.fixture
def servers(mongo_url: str, mongo_target_url: str) -> Any:
    with pymongo.MongoClient(mongo_url) as source, pymongo.MongoClient(mongo_target_url) as target:
        shop, crm = database_names("c")
        other = shop.replace("shop", "other")
        yield source, target, shop, crm, other
        for client in (source, target):
            for db in (shop, crm, other):
                client.drop_database(db)


def _seed(client: Any, shop: str, crm: str) -> None:
    client[shop]["orders"].insert_many([{"_id": i, "n": i, "lines": [i]} for i in range(1, 50)])
    client[shop]["scratch"].insert_one({"_id": 1})
    client[crm]["customers"].insert_many([{"_id": i, "email": f"c{i}@example.com"} for i in range(1, 20)])
    client[crm]["customers"].create_index([("email", 1)], unique=True, name="email_1")


def _restore_to(
    storage: LocalStorage, agg: Capture, target: Any, at: datetime, databases: list[str]
) -> dict[str, Any]:
    for db in databases:
        target.drop_database(db)
    dst = MongoTarget("mongo-dst", url_of(target), None, "fail")
    run_restore(storage, KEY, dst, [], lambda *a: None, lambda: False)
    plan = point_in_time.plan(
        agg.from_position,
        agg.segments,
        lambda facts: read_segment(storage, facts, decode=capture.read_segment),
        to_time=at,
        checked=(agg.checked_lsn, agg.restorable_until or ""),
    )
    return point_in_time.replay_oplog(dst, plan, [], {}, databases)


def test_restores_to_each_moment_equal_the_source_then(servers, tmp_path: Path):
    source, target, shop, crm, other = servers
    _seed(source, shop, crm)
    storage = LocalStorage("local", tmp_path / "store")
    result = backup(storage, source, [shop, crm])
    window_start = result.point_in_time["cluster_time"]
    assert result.point_in_time["at"]  # the wall clock the window starts at
    task, agg = _task(source, [shop, crm], storage, window_start, segment_bytes=2000)

    moments: list[tuple[datetime, dict[str, tuple[int, str]]]] = []
    for index, step in enumerate(_workload(source, shop, crm, other)):
        step()
        moments.append((_moment(source), _state(source, [shop, crm])))
        time.sleep(0.005)  # the next step's wall clock is a later millisecond
        if index % 4 == 1:
            _drain(task)  # segments close between steps and at a backlog
    _drain(task)

    assert len(agg.segments) > 2
    assert agg.segments[0]["from_lsn"] == window_start
    for before, after in zip(agg.segments, agg.segments[1:], strict=False):
        assert after["from_lsn"] == before["to_lsn"]  # contiguous
    read = [read_segment(storage, s, decode=capture.read_segment) for s in agg.segments]
    namespaces = {e["ns"] for txns in read for t in txns for e in t.changes}
    assert not any(ns.startswith(other) for ns in namespaces)  # the database not captured
    # The transaction of three writes is one transaction in the stream.
    assert any(len(t.changes) == 3 and t.xid is not None for txns in read for t in txns)

    for at, expected in [moments[0], moments[4], moments[8], moments[10], moments[-1]]:
        replayed = _restore_to(storage, agg, target, at, [shop, crm])
        assert _state(target, [shop, crm]) == expected, at
        assert replayed["changes"] + replayed["skipped"] > 0
    # The fresh capped collection's index came too.
    assert "v_1" in {i["name"] for i in target[shop]["fresh"].list_indexes()}


def test_a_segment_is_mongodumps_oplog_bson(servers, tmp_path: Path):
    source, _, shop, crm, _ = servers
    _seed(source, shop, crm)
    storage = LocalStorage("local", tmp_path / "store")
    result = backup(storage, source, [shop, crm])
    task, agg = _task(source, [shop, crm], storage, result.point_in_time["cluster_time"])
    source[shop]["orders"].insert_one({"_id": "x"})
    source[shop]["orders"].delete_one({"_id": "x"})
    _drain(task)
    (segment,) = agg.segments
    entries = bson.decode_all(gzip.decompress(storage.get_bytes(segment["key"])))
    assert [e["op"] for e in entries] == ["i", "d"]
    assert segment["to_lsn"] == cluster_time(entries[-1]["ts"]) and segment["items"] == 2
    assert segment["key"].startswith("live/changes/live-") and segment["key"].endswith(".changes.gz")


def test_an_idle_source_stays_restorable_to_now(servers, tmp_path: Path):
    source, _, shop, crm, other = servers
    _seed(source, shop, crm)
    storage = LocalStorage("local", tmp_path / "store")
    result = backup(storage, source, [shop, crm])
    task, agg = _task(source, [shop, crm], storage, result.point_in_time["cluster_time"])
    source[other]["noise"].insert_many([{"i": i} for i in range(5)])  # other databases write
    before = datetime.now(UTC)
    assert task.step().segment is None
    assert agg.segments == [] and agg.restorable_until is not None
    assert datetime.fromisoformat(agg.restorable_until) >= before - timedelta(seconds=1)
    assert capture.position_value(agg.checked_lsn) > capture.position_value(agg.from_position)


def test_a_capture_the_oplog_rolled_past_fails_loudly(tmp_path: Path):
    with secantus() as url, pymongo.MongoClient(url) as client:  # an oplog of 20,000 entries
        client.shop.orders.insert_one({"_id": 0})
        start = cluster_time(client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"])
        storage = LocalStorage("local", tmp_path / "store")
        task, agg = _task(client, ["shop"], storage, start)
        client.shop.orders.insert_many([{"_id": i} for i in range(1, 20_100)])
        with pytest.raises(CaptureFailed, match="rolled over"):
            task.step()
        assert agg.status == "failed" and "changes since are lost" in (agg.reason or "")


def test_the_alarm_sounds_when_half_the_oplog_is_behind_the_capture(tmp_path: Path, monkeypatch):
    import service.oplog_capture as step

    with secantus() as url, pymongo.MongoClient(url) as client:  # an oplog that spans 2 s
        client.shop.orders.insert_one({"_id": 1})
        oldest = client.local["oplog.rs"].find_one(sort=[("$natural", 1)])["ts"]
        time.sleep(2.1)
        client.shop.orders.insert_one({"_id": 2})
        storage = LocalStorage("local", tmp_path / "store")
        task, _ = _task(client, ["shop"], storage, cluster_time(_newest(client)))
        assert task.check() == (None, None)  # keeping up
        behind, _ = _task(client, ["shop"], storage, cluster_time(Timestamp(oldest.time, 1)))
        assert behind.check() == (None, None)  # under the floor: the oplog's start is not even read
        monkeypatch.setattr(step, "ALARM_FLOOR_SECONDS", 0)
        _, alarm = behind.check()
        assert alarm is not None and "not keeping up" in alarm


def _newest(client: Any) -> Timestamp:
    ts: Timestamp = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]
    return ts


def test_a_rename_from_a_database_not_captured_ends_the_window(servers, tmp_path: Path):
    source, _, shop, crm, other = servers
    _seed(source, shop, crm)
    storage = LocalStorage("local", tmp_path / "store")
    result = backup(storage, source, [shop, crm])
    task, agg = _task(source, [shop, crm], storage, result.point_in_time["cluster_time"])
    source[shop]["orders"].insert_one({"_id": "before"})
    source[other]["outside"].insert_one({"_id": 1})
    source.admin.command("renameCollection", f"{other}.outside", to=f"{shop}.inside")
    source[shop]["orders"].insert_one({"_id": "after"})
    result = task.step()
    assert f"{shop}.inside was renamed from {other}.outside" in (result.reshaped or "")
    assert sum(s["transactions"] for s in agg.segments) == 1  # the insert before it, nothing after


# ------------------------------------------------------------ transactions, as mongod writes them
def _entry(ts: int, op: str = "i", **extra: Any) -> dict[str, Any]:
    return {"ts": Timestamp(1_800_000_000, ts), "op": op, "ns": "shop.orders", "o": {"_id": ts}, **extra}


def test_a_large_transactions_chain_is_one_transaction_and_waits_for_its_commit():
    lsid = {"id": bson.Binary(b"\x01" * 16, 4)}
    part = {"applyOps": [{"op": "i", "ns": "shop.orders", "o": {"_id": 1}}], "partialTxn": True}
    last = {"applyOps": [{"op": "i", "ns": "shop.orders", "o": {"_id": 2}}], "count": 2}
    chain = [
        _entry(1),
        _entry(2, "c", ns="admin.$cmd", o=part, lsid=lsid, txnNumber=5),
        _entry(3),  # another client's write, between the chain's entries
        _entry(4, "c", ns="admin.$cmd", o=last, lsid=lsid, txnNumber=5),
    ]
    whole = capture.transactions(chain, complete=True)
    assert [t.commit_lsn for t in whole] == ["1800000000.1", "1800000000.3", "1800000000.4"]
    assert [len(t.changes) for t in whole] == [1, 1, 2] and whole[2].xid == 5
    assert capture.items(whole[2]) == 2
    # Read before its commit: nothing from the chain's start on is archived yet.
    cut = capture.transactions(chain[:3], complete=True)
    assert [t.commit_lsn for t in cut] == ["1800000000.1"]


def test_entries_sharing_a_ts_and_transaction_are_one_transaction():
    lsid = {"id": bson.Binary(b"\x02" * 16, 4)}
    same = [_entry(7, lsid=lsid, txnNumber=1), {**_entry(7, lsid=lsid, txnNumber=1), "ns": "crm.c"}]
    found = capture.transactions([_entry(6), *same, _entry(8)], complete=True)
    assert [len(t.changes) for t in found] == [1, 2, 1]
    # A read cut short may stop inside such a group: its last transaction waits.
    assert len(capture.transactions([_entry(6), *same], complete=False)) == 1
