"""Continuous capture from PostgreSQL: a snapshot read in a slot's exported snapshot, the
slot's changes archived as segments, and a restore to chosen moments equal to the source
as it was at each, table for table.

Needs a cluster with wal_level = logical (tests/support/logical.py); restores go to the
shared cluster, as a restore to another server would.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domain.capture import Capture
from tests.support import logical, pgdb
from transfer.errors import SourceError, TargetError
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.sources.postgres import capture
from transfer.sources.postgres.replay import ChangeReplayer, up_to
from transfer.sources.postgres.source import PostgresSource
from transfer.sources.postgres.target import PostgresTarget
from transfer.storage import LocalStorage

KEY = "cont/snap-1.tar"
SCHEMAS = ["shop", "Odd Schema"]
BIG = "toasted " * 40_000  # stored out of line: an UPDATE that leaves it is sent without it

SCHEMA_SQL = """
CREATE SCHEMA shop;
CREATE SCHEMA "Odd Schema";
CREATE TABLE shop.orders (
    id serial PRIMARY KEY,
    customer text NOT NULL,
    total numeric(12, 2),
    tags text[],
    meta jsonb,
    doc json,
    body text,
    at timestamptz DEFAULT '2026-01-01 00:00:00+00',
    doubled int GENERATED ALWAYS AS (id * 2) STORED
);
CREATE TABLE shop.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text,
    payload bytea
);
CREATE TABLE "Odd Schema"."log book" ("line no" int, "the text" text);
ALTER TABLE "Odd Schema"."log book" REPLICA IDENTITY FULL;
INSERT INTO shop.orders (customer, total, tags, meta, doc, body)
    SELECT 'c' || i, i * 1.25, ARRAY['t' || i, 'a "q"'], jsonb_build_object('i', i), '{"k": [1, 2]}',
           CASE WHEN i = 1 THEN %(big)s END
    FROM generate_series(1, 50) i;
INSERT INTO shop.events (kind, payload) SELECT 'seed', '\\x00ff'::bytea FROM generate_series(1, 10);
INSERT INTO "Odd Schema"."log book" VALUES (1, 'same'), (1, 'same'), (2, 'it''s');
"""

# Each step is one source transaction (several statements where a list), run in order;
# the test records the source's checksums after each.
WORKLOAD: list[list[str]] = [
    ["INSERT INTO shop.orders (customer, total) VALUES ('x', 1)"],
    ["UPDATE shop.orders SET total = total + 1, tags = tags || '{new}' WHERE id <= 10"],
    ["UPDATE shop.orders SET customer = 'toast kept' WHERE id = 1"],  # body: unchanged-toast-datum
    ["UPDATE shop.orders SET id = 1000 WHERE id = 2"],  # the key changes: old-key
    [
        "DELETE FROM shop.orders WHERE id BETWEEN 20 AND 25",
        "INSERT INTO shop.events (kind, payload) VALUES ('multi', NULL)",
        'UPDATE shop.orders SET meta = \'{"nested": {"a": null}}\', doc = \'[1, "two"]\' WHERE id = 30',
    ],
    [
        'DELETE FROM "Odd Schema"."log book" WHERE ctid = '
        '(SELECT min(ctid) FROM "Odd Schema"."log book" WHERE "line no" = 1)'
    ],
    ['UPDATE "Odd Schema"."log book" SET "the text" = NULL WHERE "line no" = 2'],
    ["TRUNCATE shop.events", "INSERT INTO shop.events (kind) VALUES ('after truncate')"],
    ["INSERT INTO shop.orders (customer, body) VALUES ('quote''s \\ back', 'line\nbreak')"],
]


def _source(dbname: str) -> PostgresSource:
    return PostgresSource("cont", logical.url(dbname), None, SCHEMAS)


def _backup_in(slot: capture.Slot, dbname: str, storage: LocalStorage) -> None:
    """The snapshot, read in the slot's exported snapshot."""
    run_backup(
        _source(dbname).joined(slot.snapshot), storage, KEY, [], [], {}, lambda *a: None, lambda: False
    )


def _restore(storage: LocalStorage, dbname: str) -> None:
    target = PostgresTarget("copy", pgdb.url(dbname), None, "fail")
    run_restore(storage, KEY, target, [], lambda *a: None, lambda: False)


def _replay(dbname: str, transactions: list[capture.Transaction]) -> ChangeReplayer:
    with psycopg.connect(pgdb.conninfo(dbname), autocommit=True) as conn:
        replayer = ChangeReplayer(conn)
        for txn in transactions:
            replayer.apply(txn)
        return replayer


@pytest.fixture
def source_db() -> Any:
    logical.require()
    with logical.database("cap") as name:
        with psycopg.connect(logical.url(name), autocommit=True) as conn:
            conn.execute(SCHEMA_SQL.replace("%(big)s", "'" + BIG + "'"))
        yield name


def test_restores_to_each_moment_equal_the_source_then(source_db, tmp_path: Path):
    storage = LocalStorage("local", tmp_path / "store")
    slot_name = "snapledger_test_" + source_db
    moments: list[tuple[str, datetime, dict[str, Any]]] = []
    with psycopg.connect(logical.url(source_db), autocommit=True) as conn:
        with capture.create_slot(logical.url(source_db), None, slot_name) as slot:
            # Committed after the slot but before the backup reads anything: in the stream,
            # not in the snapshot, even though the backup has not started yet.
            conn.execute("INSERT INTO shop.orders (customer) VALUES ('between slot and read')")
            _backup_in(slot, source_db, storage)
        for step in WORKLOAD:
            with conn.transaction():
                for statement in step:
                    conn.execute(statement)
            lsn = capture.current_lsn(conn)
            at = conn.execute("SELECT now()").fetchone()[0]
            moments.append((lsn, at, pgdb.checksums_of(conn, SCHEMAS)))
        transactions = capture.peek(conn, slot_name)
        assert len(transactions) == 1 + len(WORKLOAD)  # whole transactions, none before the slot

        archived = capture.segment(slot.consistent_lsn, transactions)
        read_back = capture.read_segment(archived.data, archived.sha256)
        assert read_back == transactions
        # Rows, not statements: 1 before the read, then 1, 10, 1, 1, 6 + 1 + 1, 1, 1, 1 + 1, 1.
        assert archived.items == 27
        with pytest.raises(SourceError, match="SHA-256"):
            middle = len(archived.data) // 2
            flipped = (
                archived.data[:middle] + bytes([archived.data[middle] ^ 1]) + archived.data[middle + 1 :]
            )
            capture.read_segment(flipped, archived.sha256)

        # The slot moves only when told (after the segment is durable), and then past all of it.
        assert capture.confirmed_lsn(conn, slot_name) == slot.consistent_lsn
        capture.advance(conn, slot_name, archived.to_lsn)
        assert capture.peek(conn, slot_name) == []
        assert capture.retained_wal_bytes(conn, slot_name) is not None

        for index in (0, 3, 5, len(WORKLOAD) - 1):
            lsn, at, expected = moments[index]
            with pgdb.databases("pitr") as (dst,):
                _restore(storage, dst)
                by_lsn = _replay(dst, up_to(read_back, to_lsn=lsn))
                assert by_lsn.transactions == index + 2
                assert pgdb.checksums(dst, SCHEMAS) == expected, f"moment {index} by position"
            with pgdb.databases("pitr") as (dst,):
                _restore(storage, dst)
                _replay(dst, up_to(read_back, to_time=at))
                assert pgdb.checksums(dst, SCHEMAS) == expected, f"moment {index} by time"

        assert capture.drop_slot(conn, slot_name) is True
        assert capture.retained_wal_bytes(conn, slot_name) is None
        assert capture.drop_slot(conn, slot_name) is False


def test_a_replay_onto_another_state_stops_naming_the_change(source_db, tmp_path: Path):
    storage = LocalStorage("local", tmp_path / "store")
    slot_name = "snapledger_test_" + source_db
    with psycopg.connect(logical.url(source_db), autocommit=True) as conn:
        with capture.create_slot(logical.url(source_db), None, slot_name) as slot:
            _backup_in(slot, source_db, storage)
        conn.execute("UPDATE shop.orders SET total = 0 WHERE id = 7")
        transactions = capture.peek(conn, slot_name)
    with pgdb.databases("pitr") as (dst,):
        _restore(storage, dst)
        with psycopg.connect(pgdb.conninfo(dst), autocommit=True) as target:
            target.execute("DELETE FROM shop.orders WHERE id = 7")
            replayer = ChangeReplayer(target)
            with pytest.raises(
                TargetError, match=r"UPDATE on shop.orders \(transaction \d+, commit .*\) finds no row"
            ):
                replayer.apply(transactions[0])
            assert replayer.transactions == 0


def test_a_snapshot_that_is_gone_is_refused_by_name(source_db, tmp_path: Path):
    storage = LocalStorage("local", tmp_path / "store")
    with pytest.raises(SourceError, match="cannot read in snapshot '00000003-0000FFFF-1'"):
        run_backup(
            _source(source_db).joined("00000003-0000FFFF-1"),
            storage,
            KEY,
            [],
            [],
            {},
            lambda *a: None,
            lambda: False,
        )


def test_a_restore_to_a_moment_reads_the_archived_segments_up_to_its_commit(source_db, tmp_path: Path):
    from service.capture import CaptureSettings, CaptureTask, read_segment
    from tests.service.test_capture import Recorder
    from transfer.runs import point_in_time

    storage = LocalStorage("local", tmp_path / "store")
    slot_name = "snapledger_test_" + source_db
    moments: list[tuple[str, datetime, dict[str, Any]]] = []
    with psycopg.connect(logical.url(source_db), autocommit=True) as conn:
        with capture.create_slot(logical.url(source_db), None, slot_name) as slot:
            started = conn.execute("SELECT now()").fetchone()[0]
            _backup_in(slot, source_db, storage)
        agg = Capture(uuid.uuid4(), uuid.uuid4(), "cont", "local", slot_name, slot.consistent_lsn)
        task = CaptureTask(
            conn, slot_name, "cont", storage, Recorder(agg), CaptureSettings(segment_bytes=4096)
        )
        for number, step in enumerate(WORKLOAD):
            with conn.transaction():
                for statement in step:
                    conn.execute(statement)
            moments.append(
                (
                    capture.current_lsn(conn),
                    conn.execute("SELECT now()").fetchone()[0],
                    pgdb.checksums_of(conn, SCHEMAS),
                )
            )
            if number % 3 == 2:
                while task.step().more:
                    pass
        while task.step().more:
            pass
    assert len(agg.segments) >= 3

    reads: list[str] = []

    def read(facts: dict[str, Any]) -> list[capture.Transaction]:
        reads.append(facts["key"])
        return read_segment(storage, facts)

    for index in (1, 4, len(WORKLOAD) - 1):
        lsn, at, expected = moments[index]
        checked = (agg.checked_lsn, agg.restorable_until or "")
        reads.clear()
        chosen = point_in_time.plan(
            slot.consistent_lsn, agg.segments, read, to_time=at, snapshot_time=started, checked=checked
        )
        assert reads == [chosen.segments[-1]["key"]]  # a plan reads only where it ends
        assert chosen.end is not None and chosen.end["time"] <= at.isoformat()
        assert chosen.transactions == index + 1
        with pgdb.databases("pitr") as (dst,):
            _restore(storage, dst)
            done = point_in_time.replay(pgdb.url(dst), None, chosen)
            assert done["transactions"] == index + 1 and done["end"] == chosen.end
            assert pgdb.checksums(dst, SCHEMAS) == expected, f"moment {index}"
            # Sequences are not in the stream: they catch up with the replayed rows, so the
            # restored database's next insert takes a new key.
            assert "shop.orders_id_seq" in done["sequences"]
            with psycopg.connect(pgdb.conninfo(dst), autocommit=True) as restored:
                restored.execute("INSERT INTO shop.orders (customer) VALUES ('next')")
                restored.execute("INSERT INTO shop.events (kind) VALUES ('next')")
        by_lsn = point_in_time.plan(slot.consistent_lsn, agg.segments, read, to_lsn=lsn, checked=checked)
        assert by_lsn.end == chosen.end

    last = agg.segments[-1]
    with pytest.raises(
        point_in_time.PointInTimeError, match="archived up to " + re.escape(last["until_time"])
    ):
        point_in_time.plan(
            slot.consistent_lsn,
            agg.segments,
            read,
            to_time=datetime.fromisoformat("2999-01-01T00:00:00+00:00"),
        )
    with pytest.raises(point_in_time.PointInTimeError, match="before the snapshot"):
        point_in_time.plan(
            slot.consistent_lsn, agg.segments, read, to_time=started.replace(year=2000), snapshot_time=started
        )
    with pytest.raises(point_in_time.PointInTimeError, match="have a gap"):
        point_in_time.plan(
            slot.consistent_lsn, [agg.segments[0], agg.segments[2]], read, to_time=moments[-1][1]
        )


def test_a_change_of_shape_stops_the_replay_naming_the_commit(source_db, tmp_path: Path):
    """DDL is not in the stream: the first row of the new shape stops the replay, naming its
    commit, with the target at the last whole transaction before it."""
    storage = LocalStorage("local", tmp_path / "store")
    slot_name = "snapledger_test_" + source_db
    with psycopg.connect(logical.url(source_db), autocommit=True) as conn:
        with capture.create_slot(logical.url(source_db), None, slot_name) as slot:
            _backup_in(slot, source_db, storage)
        conn.execute("UPDATE shop.orders SET total = 1 WHERE id = 3")
        before = pgdb.checksums_of(conn, SCHEMAS)
        conn.execute("ALTER TABLE shop.orders ADD COLUMN priority int")
        conn.execute("INSERT INTO shop.orders (customer, priority) VALUES ('after ddl', 9)")
        transactions = capture.peek(conn, slot_name)
    assert len(transactions) == 2  # the ALTER is no transaction of rows
    with pgdb.databases("pitr") as (dst,):
        _restore(storage, dst)
        with psycopg.connect(pgdb.conninfo(dst), autocommit=True) as target:
            replayer = ChangeReplayer(target)
            replayer.apply(transactions[0])
            assert pgdb.checksums(dst, SCHEMAS) == before
            with pytest.raises(
                TargetError, match=r"shop.orders changed shape at commit .* has no column 'priority'"
            ):
                replayer.apply(transactions[1])
            assert pgdb.checksums(dst, SCHEMAS) == before  # the transaction left nothing behind
