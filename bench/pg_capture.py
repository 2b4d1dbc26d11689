"""Continuous capture from PostgreSQL: capture lag under load, and replay against a bare
psycopg loop applying the same changes in the same transactions.

    python bench/pg_capture.py [--rate 1000] [--seconds 30] [--replay 20000]
        [--url postgresql://postgres@127.0.0.1:5433/postgres]   (wal_level = logical)
        [--target postgresql://postgres@127.0.0.1:5432/postgres]

Lag: a writer commits `--rate` row changes a second (ten transactions a second, inserts,
updates and deletes mixed) while a capture steps once a second, as a policy with
segment_seconds = 1s does. A transaction's lag is from its commit to the moment the
segment holding it is recorded; the bench prints p50/p99/max and the events written per
hour of capture (one per segment).

Replay: the same captured transactions applied to two copies of the snapshot, by
snapledger's replayer and by a bare loop of the equivalent INSERT/UPDATE/DELETE statements
(values as literals, keys as primary keys), one target transaction per source transaction.
The pair runs in alternating order; the ratio is bare time / ours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from service.capture import CaptureSettings, CaptureTask  # noqa: E402
from transfer.sources.postgres import capture  # noqa: E402
from transfer.sources.postgres.decoding import parse_change  # noqa: E402
from transfer.sources.postgres.replay import ChangeReplayer  # noqa: E402
from transfer.storage import LocalStorage  # noqa: E402

SCHEMA = "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL, note text)"
INSERT_RANGE = "INSERT INTO t SELECT i, 0, 'row ' || i FROM generate_series(%s::bigint, %s::bigint) i"


class MemoryRecorder:
    def __init__(self, start: str) -> None:
        self.pos = start
        self.segments: list[tuple[float, dict[str, Any]]] = []
        self.at: str | None = None

    def position(self) -> str:
        return self.pos

    def archived(self, facts: dict[str, Any]) -> None:
        self.segments.append((time.time(), facts))
        self.pos = facts["to_lsn"]
        self.at = facts.get("until_time") or facts["last_commit"]

    def failed(self, reason: str) -> None:
        raise RuntimeError(reason)

    def checked(self, lsn: str, at: str) -> None:
        self.at = at

    def checked_at(self) -> str | None:
        return self.at


def _db(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} STRATEGY = FILE_COPY").format(sql.Identifier(name)))
    return url.rsplit("/", 1)[0] + "/" + name


def _drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ):
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _writer(url: str, rate: int, seconds: float, commits: dict[int, float], stop: threading.Event) -> None:
    """Ten transactions a second, rate/10 row changes each: inserts, then updates and deletes."""
    per_txn = max(1, rate // 10)
    next_id = 1
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds and not stop.is_set():
            with conn.transaction():
                xid = int(conn.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
                inserts = per_txn // 2
                conn.execute(
                    INSERT_RANGE,
                    (next_id, next_id + inserts - 1),
                )
                next_id += inserts
                updates = per_txn - inserts - per_txn // 10
                conn.execute(
                    "UPDATE t SET n = n + 1 WHERE id > %s AND id <= %s",
                    (next_id - inserts - updates, next_id - inserts),
                )
                deletes = per_txn - inserts - updates
                conn.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT %s)", (deletes,))
            commits[xid] = time.time()
            tick += 1
            delay = start + tick / 10 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def lag(url: str, rate: int, seconds: float, tmp: Path) -> dict[str, Any]:
    name = f"bench_cap_{uuid.uuid4().hex[:8]}"
    db = _db(url, name)
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(SCHEMA)
            with capture.create_slot(db, None, "bench_" + name) as slot:
                pass
            recorder = MemoryRecorder(slot.consistent_lsn)
            task = CaptureTask(conn, slot.name, "bench", LocalStorage("bench", tmp / "store"), recorder,
                               CaptureSettings(checkpoint_seconds=1))  # fmt: skip
            commits: dict[int, float] = {}
            stop = threading.Event()
            writer = threading.Thread(target=_writer, args=(db, rate, seconds, commits, stop))
            started = time.time()
            writer.start()
            while writer.is_alive():
                step_start = time.monotonic()
                while task.step().more:
                    pass
                time.sleep(max(0.0, 1.0 - (time.monotonic() - step_start)))
            while task.step().more:
                pass
            elapsed = time.time() - started
            lags = []
            changes = 0
            from service.capture import read_segment

            storage = LocalStorage("bench", tmp / "store")
            for recorded_at, facts in recorder.segments:
                for txn in read_segment(storage, facts):
                    if txn.xid in commits:
                        lags.append(recorded_at - commits[txn.xid])
                    changes += len(txn.changes)
            lags.sort()
            return {
                "transactions": len(lags),
                "changes": changes,
                "changes_per_second": changes / elapsed,
                "p50": statistics.median(lags),
                "p99": lags[int(0.99 * (len(lags) - 1))],
                "max": lags[-1],
                "segments": len(recorder.segments),
                "events_per_hour": len(recorder.segments) * 3600 / elapsed,
            }
    finally:
        _drop(url, name)


def _bare(conn: psycopg.Connection, transactions: list[Any]) -> float:
    """The same changes as plain statements, keys as the primary key."""
    start = time.perf_counter()
    for txn in transactions:
        with conn.transaction():
            for line in txn.changes:
                change = parse_change(line)
                if change.action == "INSERT":
                    values = {c.name: c.value for c in change.new}
                    conn.execute(
                        "INSERT INTO t (id, n, note) VALUES (%s, %s, %s)",
                        (values["id"], values["n"], values["note"]),
                    )
                elif change.action == "UPDATE":
                    values = {c.name: c.value for c in change.new}
                    cur = conn.execute(
                        "UPDATE t SET n = %s, note = %s WHERE id = %s",
                        (values["n"], values["note"], values["id"]),
                    )
                    assert cur.rowcount == 1
                else:
                    cur = conn.execute("DELETE FROM t WHERE id = %s", (change.old[0].value,))
                    assert cur.rowcount == 1
    return time.perf_counter() - start


def replay(url: str, target: str, count: int, runs: int) -> list[tuple[float, float]]:
    name = f"bench_rep_{uuid.uuid4().hex[:8]}"
    db = _db(url, name)
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(SCHEMA)
            with capture.create_slot(db, None, "bench_" + name) as slot:
                pass
            per = 100
            for start in range(0, count // 2, per // 2):  # half inserts, then updates and deletes
                with conn.transaction():
                    conn.execute(
                        INSERT_RANGE,
                        (start + 1, start + per // 2),
                    )
            for start in range(0, count // 4, per):
                with conn.transaction():
                    conn.execute("UPDATE t SET n = n + 1 WHERE id > %s AND id <= %s", (start, start + per))
            for start in range(count // 4, count // 2, per):
                with conn.transaction():
                    conn.execute("DELETE FROM t WHERE id > %s AND id <= %s", (start, start + per))
            transactions = []
            while batch := capture.peek(conn, slot.name, 50_000):
                transactions.extend(batch)
                capture.advance(conn, slot.name, batch[-1].commit_lsn)
        results = []
        for run in range(runs):
            pair = []
            for which in ("bare", "ours") if run % 2 == 0 else ("ours", "bare"):
                dst = f"bench_dst_{uuid.uuid4().hex[:8]}"
                dst_url = _db(target, dst)
                try:
                    with psycopg.connect(dst_url, autocommit=True) as conn:
                        conn.execute(SCHEMA)
                        if which == "bare":
                            pair.append(("bare", _bare(conn, transactions)))
                        else:
                            replayer = ChangeReplayer(conn)
                            start = time.perf_counter()
                            for txn in transactions:
                                replayer.apply(txn)
                            pair.append(("ours", time.perf_counter() - start))
                finally:
                    _drop(target, dst)
            times = dict(pair)
            results.append((times["bare"], times["ours"]))
            changes = sum(len(t.changes) for t in transactions)
            print(f"replay run {run + 1}: bare {times['bare']:.2f}s ours {times['ours']:.2f}s "
                  f"({changes} changes in {len(transactions)} transactions)", flush=True)  # fmt: skip
        return results
    finally:
        _drop(url, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5433/postgres")
    parser.add_argument("--target", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--replay", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        found = lag(args.url, args.rate, args.seconds, Path(tmp))
    print(
        f"lag at {found['changes_per_second']:.0f} changes/s over {args.seconds:.0f} s: "
        f"p50 {found['p50']:.2f}s p99 {found['p99']:.2f}s max {found['max']:.2f}s; "
        f"{found['transactions']} transactions, {found['segments']} segments "
        f"({found['events_per_hour']:.0f} events per hour of capture)",
        flush=True,
    )
    pairs = replay(args.url, args.target, args.replay, args.runs)
    ratios = [bare / ours for bare, ours in pairs]
    print(f"replay median {statistics.median(ratios):.2f}x the bare psycopg loop")
    print(f"at {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
