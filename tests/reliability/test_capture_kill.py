"""`kill -9` of the worker process while it captures a continuous policy's changes, at
moments the test does not choose: afterwards every source transaction is archived exactly
once, in order, with no gap, and the slot never stood ahead of what the events record
(real `snapledger worker` processes, a real slot on the logical cluster)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from api.runtime import Runtime
from domain.capture import capture_id
from service.capture import read_segment
from tests.support import logical
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.tally import report
from transfer.sources.postgres import capture as pg_capture
from transfer.sources.postgres.capture import lsn_value

ACTOR = "kill-test"


@pytest.fixture
def backend() -> str:
    """Worker processes share the PostgreSQL event store (SQLite serves one process)."""
    return "postgresql"


def _writer(url: str, stop: threading.Event, committed: list[int]) -> None:
    """One row per transaction, numbered: what the archive must hold, each once."""
    with psycopg.connect(url, autocommit=True) as conn:
        n = 0
        while not stop.is_set():
            n += 1
            with conn.transaction():
                conn.execute("INSERT INTO shop.ticks VALUES (%s, repeat('x', 200))", (n,))
                conn.execute("UPDATE shop.ticks SET pad = 'seen' WHERE n = %s", (max(1, n - 5),))
            committed.append(n)
            time.sleep(0.01)


def _kill_three_times(
    app: Any,
    runtime: Runtime,
    workers: WorkerProcesses,
    policy: Any,
    writer: threading.Thread,
    stop: threading.Event,
    committed: list[int],
    rng: random.Random,
    kills: list[int],
    inserted: Callable[[Any], list[int]],
    decode: Callable[[bytes, str], list[Any]],
) -> tuple[Any, list[int]]:
    """Snapshot, then a capture under a writer, its worker killed three times at random
    moments; answers the capture once it holds every committed transaction, and the
    numbers its segments insert, in order (the segments checked contiguous on the way)."""
    victim = workers.start()
    sid = app.request_snapshot(policy, ACTOR).id
    wait_until(lambda: app.get_snapshot(sid).status == "completed", 60, "the snapshot")
    cid = capture_id(policy, sid)
    writer.start()
    for _ in range(3):
        time.sleep(rng.uniform(1.5, 4.0))  # somewhere in a step, or between two
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        kills.append(len(committed))
        victim = workers.start()
    time.sleep(2)
    stop.set()
    writer.join(timeout=30)

    def archived() -> Any:
        try:
            found = app.get_capture(cid)
        except Exception:  # noqa: BLE001 - not started yet
            return None
        return found if sum(s["transactions"] for s in found.segments) >= len(committed) else None

    found = wait_until(archived, 90, f"the capture to archive {len(committed)} transactions")
    storage = runtime.resources.storages["local"]
    seen: list[int] = []
    position = found.from_position
    for segment in found.segments:
        assert segment["from_lsn"] == position  # contiguous: no gap, no overlap
        position = segment["to_lsn"]
        for txn in read_segment(storage, segment, capture_id=str(cid), decode=decode):
            seen.extend(inserted(txn))
    return found, seen


def _pg_inserts(txn: Any) -> list[int]:
    return [int(line.split("n[integer]:")[1].split()[0]) for line in txn.changes if ": INSERT: " in line]


def _mongo_inserts(txn: Any) -> list[int]:
    return [int(e["o"]["_id"]) for e in txn.changes if e["op"] == "i"]


def test_kill_nine_mid_capture_loses_and_repeats_nothing(make_config, tmp_path):
    logical.require()
    rng = random.Random(int(os.environ.get("SNAPLEDGER_KILL_SEED", "1201")))
    with logical.database("kill") as dbname:
        url = logical.url(dbname)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA shop; CREATE TABLE shop.ticks (n int PRIMARY KEY, pad text)")
        config = make_config(
            extra=f"""
[sources.live]
kind = "postgresql"
url = "{url}"
schemas = ["shop"]

[worker]
lease_seconds = 2
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        app = runtime.app
        workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
        policy = app.create_policy(
            {"name": "live", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}},
            ACTOR,
        ).id
        stop, committed = threading.Event(), []
        writer = threading.Thread(target=_writer, args=(url, stop, committed))
        kills: list[int] = []
        try:
            capture, seen = _kill_three_times(
                app, runtime, workers, policy, writer, stop, committed, rng, kills, _pg_inserts,
                pg_capture.read_segment,
            )  # fmt: skip
            last = committed[-1]
            assert seen == list(range(1, last + 1)), (len(seen), last, workers.logs()[-2000:])
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                    (capture.slot,),
                ).fetchone()
            assert row is not None and lsn_value(row[0]) <= lsn_value(capture.position)
        finally:
            stop.set()
            if writer.is_alive():
                writer.join(timeout=30)
            workers.close()
            runtime.app.close()
            runtime.views.close()
    report(
        f"capture-kill: killed 3 times (after {kills} transactions); "
        f"{len(committed)} transactions archived once each"
    )


def _mongo_writer(client: Any, db: str, stop: threading.Event, committed: list[int]) -> None:
    """One numbered insert and an update per transaction, as the PostgreSQL writer's."""
    n = 0
    while not stop.is_set():
        n += 1
        with client.start_session() as session, session.start_transaction():
            client[db]["ticks"].insert_one({"_id": n, "pad": "x" * 200}, session=session)
            client[db]["ticks"].update_one({"_id": max(1, n - 5)}, {"$set": {"pad": "seen"}}, session=session)
        committed.append(n)
        time.sleep(0.01)


def test_kill_nine_mid_mongodb_capture_loses_and_repeats_nothing(make_config, mongo_url, tmp_path):
    import pymongo

    from tests.support.mongo import database_names
    from transfer.sources.mongodb import capture as oplog_capture

    rng = random.Random(int(os.environ.get("SNAPLEDGER_KILL_SEED", "1201")))
    db, _ = database_names("k")
    with pymongo.MongoClient(mongo_url) as client:
        client[db]["ticks"].insert_one({"_id": 0, "pad": "seed"})
        config = make_config(
            extra=f"""
[sources.live]
kind = "mongodb"
url = "{mongo_url}"
databases = ["{db}"]

[worker]
lease_seconds = 2
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        app = runtime.app
        workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
        policy = app.create_policy(
            {"name": "live", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}},
            ACTOR,
        ).id
        stop, committed = threading.Event(), []
        writer = threading.Thread(target=_mongo_writer, args=(client, db, stop, committed))
        kills: list[int] = []
        try:
            _, seen = _kill_three_times(app, runtime, workers, policy, writer, stop, committed, rng, kills,
                                        _mongo_inserts, oplog_capture.read_segment)  # fmt: skip
            assert seen == list(range(1, committed[-1] + 1)), (
                len(seen),
                committed[-1],
                workers.logs()[-2000:],
            )
        finally:
            stop.set()
            if writer.is_alive():
                writer.join(timeout=30)
            workers.close()
            runtime.app.close()
            runtime.views.close()
            client.drop_database(db)
    report(
        f"mongodb-capture-kill: killed 3 times (after {kills} transactions); "
        f"{len(committed)} transactions archived once each"
    )
