"""A continuous policy end to end, in one runtime (worker, capture loop, views): its snapshot
is read in a new slot's exported snapshot, the capture streams from that exact point into
the policy's storage as segments recorded on the Capture, a restore to a chosen moment
equals the source then, and a newer snapshot, or stopping the policy, leaves no slot behind.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.config import load_config
from api.observability import collect, render
from api.records import Records
from api.runtime import Runtime
from domain.capture import CAPTURE_STOPPED, CAPTURING, capture_id
from domain.errors import InvalidTransition, NotFound
from domain.snapshot import COMPLETED
from service.capture import read_segment
from service.window import slot_name
from tests.support import logical, pgdb
from tests.support.servers import wait_until
from transfer.runs import point_in_time
from transfer.runs.restore import run_restore
from transfer.sources.postgres.target import PostgresTarget


def _slots(dbname: str) -> list[str]:
    with psycopg.connect(logical.url(dbname)) as conn:
        rows = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (dbname,))
        return sorted(r[0] for r in rows.fetchall())


@pytest.fixture
def runtime(tmp_path: Path) -> Any:
    logical.require()
    with logical.database("cont") as dbname, pgdb.databases("pitr") as (target_db,):
        with psycopg.connect(logical.url(dbname), autocommit=True) as conn:
            conn.execute(
                "CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, n int, note text)"
            )
            conn.execute("INSERT INTO shop.orders SELECT i, i, 'seed' FROM generate_series(1, 100) i")
        config = tmp_path / "snapledger.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[sources.live]\nkind = "postgresql"\nurl = "{logical.url(dbname)}"\nschemas = ["shop"]\n'
            f'[storages.local]\nurl = "{tmp_path / "store"}"\n'
            f'[targets.copy]\nkind = "postgresql"\nurl = "{pgdb.url(target_db)}"\n'
            "[worker]\nlease_seconds = 30\n"
        )
        rt = Runtime.build(load_config(config)).start()
        rt.captures.tick_seconds = 0.1
        try:
            yield rt, dbname, target_db
        finally:
            rt.close()


def _capture(rt: Runtime, cid: uuid.UUID) -> Any:
    try:
        return rt.app.get_capture(cid)
    except NotFound:  # the capture loop has not started it yet
        return None


def _completed(rt: Runtime, sid: uuid.UUID) -> Any:
    return wait_until(lambda: rt.app.get_snapshot(sid).status == COMPLETED and rt.app.get_snapshot(sid),
                      timeout=60, what="the snapshot")  # fmt: skip


def test_a_continuous_policy_restores_to_a_moment_after_its_snapshot(runtime, tmp_path: Path):
    rt, dbname, target_db = runtime
    pid = rt.app.create_policy(
        {"name": "live", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}}, "ops"
    ).id
    sid = rt.app.request_snapshot(pid, "ops").id
    rt.nudge_worker()
    snap = _completed(rt, sid)
    window = snap.point_in_time["capture"]
    assert window["slot"] == slot_name(sid) and _slots(dbname) == [slot_name(sid)]

    cid = capture_id(pid, sid)
    moments: list[tuple[datetime, dict[str, Any]]] = []
    with psycopg.connect(logical.url(dbname), autocommit=True) as conn:
        for step in range(4):
            with conn.transaction():
                conn.execute("UPDATE shop.orders SET n = n + 1 WHERE id <= %s", (10 * (step + 1),))
                conn.execute("DELETE FROM shop.orders WHERE id = %s", (100 - step,))
                conn.execute("INSERT INTO shop.orders VALUES (%s, 0, 'new')", (1000 + step,))
            moments.append((conn.execute("SELECT now()").fetchone()[0], pgdb.checksums_of(conn, ["shop"])))
    last_commit = moments[-1][0]
    capture = wait_until(
        lambda: (
            (c := _capture(rt, cid)) is not None
            and c.restorable_until
            and datetime.fromisoformat(c.restorable_until) >= last_commit
            and c
        ),
        timeout=60,
        what="the capture to archive the changes",
    )
    assert capture.status == CAPTURING and sum(s["transactions"] for s in capture.segments) == 4

    # Where operators look: the policy's window and lag, and the Backup Record's segments.
    records = Records(rt.views)

    def shown() -> Any:
        policy = records.one("policies", str(pid))
        return policy if (policy["capture"] or {}).get("segments", 0) >= 1 else None

    policy = wait_until(shown, timeout=30, what="the views to show the capture")
    assert policy["capture"]["status"] == "capturing" and policy["capture"]["snapshot_id"] == str(sid)
    assert policy["capture"]["restorable_from"] <= policy["capture"]["restorable_until"]
    assert policy["capture_lag_seconds"] is not None and policy["capture_lag_seconds"] >= 0
    metrics = render(collect(rt))
    assert 'snapledger_capture_lag_seconds{policy="live"' in metrics
    assert (
        f'snapledger_capture_retained_wal_bytes{{policy="live",policy_id="{pid}",slot="{slot_name(sid)}"}}'
        in metrics
    )
    assert f'snapledger_capture_alarm{{policy="live",policy_id="{pid}",slot="{slot_name(sid)}"}} 0' in metrics
    backup = records.one("backups", str(sid))
    assert backup["capture"]["capture_id"] == str(cid) and backup["capture"]["segments"] >= 1
    assert backup["point_in_time"]["capture"]["slot"] == slot_name(sid)

    storage = rt.resources.storages["local"]
    for at, expected in (moments[1], moments[3]):
        plan = point_in_time.plan(
            capture.from_position,
            capture.segments,
            lambda facts: read_segment(storage, facts, capture_id=str(cid)),
            to_time=at,
            checked=(capture.checked_lsn, capture.restorable_until or ""),
        )
        with pgdb.databases("pitr") as (dst,):
            target = PostgresTarget("copy", pgdb.url(dst), None, "fail")
            run_restore(storage, snap.archive_key, target, [], lambda *a: None, lambda: False)
            point_in_time.replay(pgdb.url(dst), None, plan)
            assert pgdb.checksums(dst, ["shop"]) == expected

    # Through the application and the worker, as POST /restores {policy_id, to_time} does.
    at, expected = moments[2]
    dry = rt.app.restore_to(pid, "copy", {"to_time": at.isoformat(), "dry_run": True}, "ops").id
    rt.nudge_worker()
    planned = wait_until(lambda: rt.app.get_restore(dry).status == COMPLETED and rt.app.get_restore(dry),
                         timeout=60, what="the dry run")  # fmt: skip
    assert planned.schema["point_in_time"]["planned"]["transactions"] == 3
    assert pgdb.checksums(target_db, ["shop"]) == {}  # a dry run writes nothing
    rid = rt.app.restore_to(pid, "copy", {"to_time": at.isoformat()}, "ops").id
    rt.nudge_worker()
    done = wait_until(lambda: rt.app.get_restore(rid).status == COMPLETED and rt.app.get_restore(rid),
                      timeout=60, what="the restore to a moment")  # fmt: skip
    assert done.snapshot_id == sid and done.schema["point_in_time"]["transactions"] == 3
    assert pgdb.checksums(target_db, ["shop"]) == expected
    with pytest.raises(InvalidTransition, match="is past them"):
        rt.app.restore_to(pid, "copy", {"to_time": "2999-01-01T00:00:00Z"}, "ops")
    with pytest.raises(InvalidTransition, match="is before that"):
        rt.app.restore_to(pid, "copy", {"to_time": "2001-01-01T00:00:00Z"}, "ops")

    # A change of a captured table's shape ends the window where it happened, and the
    # capture asks for a new snapshot, which opens the next window; the old slot goes.
    archived = sum(seg["transactions"] for seg in rt.app.get_capture(cid).segments)
    with psycopg.connect(logical.url(dbname), autocommit=True) as conn:
        conn.execute("ALTER TABLE shop.orders ADD COLUMN priority int")
        conn.execute("INSERT INTO shop.orders VALUES (5000, 1, 'after ddl', 7)")
    wait_until(
        lambda: rt.app.get_capture(cid).status == CAPTURE_STOPPED, timeout=30, what="the window to end"
    )
    ended = rt.app.get_capture(cid)
    assert "shop.orders changed shape" in (ended.reason or "") and "priority integer" in (ended.reason or "")
    assert sum(seg["transactions"] for seg in ended.segments) == archived  # nothing of the new shape
    snapshots = lambda: rt.app.get_policy(pid).snapshot_ids  # noqa: E731
    sid2 = wait_until(lambda: len(snapshots()) == 2 and snapshots()[-1], timeout=30, what="a new snapshot")
    rt.nudge_worker()
    second = _completed(rt, sid2)
    assert second.point_in_time["capture"]["slot"] == slot_name(sid2)
    wait_until(lambda: _slots(dbname) == [slot_name(sid2)], timeout=30, what="the old slot to go")

    # Deleting the first snapshot takes its window's segments with it.
    keys = [segment["key"] for segment in rt.app.get_capture(cid).segments]
    assert keys and all(storage.exists(k) for k in keys)
    rt.delete_snapshot(str(sid), "ops")
    assert not any(storage.exists(k) for k in keys)

    # Stopping the policy stops its capture and drops its last slot.
    rt.app.stop_policy(pid, "ops")
    wait_until(lambda: _slots(dbname) == [], timeout=30, what="the last slot to go")
    assert rt.app.get_capture(capture_id(pid, sid2)).status == CAPTURE_STOPPED


def test_one_worker_holds_a_capture_and_another_takes_it_over_when_it_goes(runtime):
    from projections import queries
    from service.capture_loop import CaptureLoop

    rt, dbname, _ = runtime
    other = CaptureLoop(rt.app, rt.resources, lambda: queries.capture_windows(rt.views), 0.1, "other-worker")
    other.start()
    try:
        pid = rt.app.create_policy(
            {"name": "held", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}},
            "ops",
        ).id
        sid = rt.app.request_snapshot(pid, "ops").id
        rt.nudge_worker()
        _completed(rt, sid)
        cid = capture_id(pid, sid)

        def write(first: int, count: int) -> None:
            with psycopg.connect(logical.url(dbname), autocommit=True) as conn:
                for n in range(first, first + count):
                    conn.execute("INSERT INTO shop.orders VALUES (%s, 0, 'held')", (n,))

        def archived(count: int) -> Any:
            c = _capture(rt, cid)
            return c if c is not None and sum(s["transactions"] for s in c.segments) >= count else None

        write(2000, 5)
        first = wait_until(lambda: archived(5), timeout=30, what="the first segments").holder
        assert first in (rt.worker.worker_id, "other-worker")
        for _ in range(5):  # the holder keeps it while it records
            time.sleep(0.5)
            write(3000 + _, 1)
        assert wait_until(lambda: archived(10), timeout=30, what="more segments").holder == first
        gone, successor = (
            (rt.captures, "other-worker") if first != "other-worker" else (other, rt.worker.worker_id)
        )
        gone.stop()
        write(4000, 3)

        def taken_over() -> Any:
            c = archived(13)
            return c if c is not None and c.holder == successor else None

        taken = wait_until(taken_over, timeout=60, what="the other worker to take the capture over")
        position = taken.from_position
        for segment in taken.segments:  # contiguous across the hand-over: nothing twice or lost
            assert segment["from_lsn"] == position
            position = segment["to_lsn"]
        assert sum(s["transactions"] for s in taken.segments) == 13
    finally:
        other.stop()
