"""Continuous capture from MongoDB: capture lag under load, and replay against a bare
pymongo loop applying the same changes.

    python bench/mongo_capture.py [--rate 1000] [--seconds 30] [--replay 20000] [--runs 3]
        [--url mongodb://...]   (default: a SecantusDB server of its own, as the tests use)

Lag: a writer commits `--rate` document changes a second (ten multi-document transactions
a second: inserts, updates and deletes mixed) while a capture steps once a second, as a
policy with segment_seconds = 1s does. A transaction's lag is from its commit (the oplog
entry's wall clock) to the moment the segment holding it is recorded; p50/p99/max, and the
events per hour of capture (one per segment).

Replay: the captured entries applied to two empty copies, by snapledger's replay (what a
restore to a moment runs) and by a bare loop of one insert_one/update_one/delete_one per
change. The pair runs in alternating order; the ratio is bare time / ours.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402

from bench.pg_capture import MemoryRecorder  # noqa: E402
from service.capture import CaptureSettings, read_segment  # noqa: E402
from service.oplog_capture import OplogCaptureTask  # noqa: E402
from transfer.sources.mongodb import capture  # noqa: E402
from transfer.sources.mongodb.oplog import cluster_time, diff_updates  # noqa: E402
from transfer.sources.mongodb.target import MongoTarget  # noqa: E402
from transfer.storage import LocalStorage  # noqa: E402


class Recorder(MemoryRecorder):
    def checked(self, lsn: str, at: str) -> None:
        self.at, self.checked_pos = at, lsn

    def checked_position(self) -> str:
        return getattr(self, "checked_pos", self.pos)


def _writer(client: Any, db: str, rate: int, seconds: float) -> None:
    """Ten transactions a second, rate/10 document changes each."""
    per_txn = max(3, rate // 10)
    inserts, deletes = per_txn // 2, per_txn // 10
    updates = per_txn - inserts - deletes
    coll, next_id, start, tick = client[db]["t"], 1, time.monotonic(), 0
    while time.monotonic() - start < seconds:
        with client.start_session() as session, session.start_transaction():
            rows = [{"_id": i, "n": 0, "note": f"row {i}"} for i in range(next_id, next_id + inserts)]
            coll.insert_many(rows, session=session)
            for i in range(next_id - updates, next_id):
                coll.update_one({"_id": i}, {"$inc": {"n": 1}}, session=session)
            for i in range(max(1, next_id - updates - deletes), next_id - updates):
                coll.delete_one({"_id": i}, session=session)
        next_id += inserts
        tick += 1
        delay = start + tick / 10 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _task(client: Any, db: str, tmp: Path) -> tuple[OplogCaptureTask, Recorder, LocalStorage]:
    newest = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    recorder = Recorder(cluster_time(newest["ts"]))
    storage = LocalStorage("bench", tmp / f"store-{uuid.uuid4().hex[:6]}")
    task = OplogCaptureTask(client, [db], "bench", storage, recorder, recorder.checked_position,
                            CaptureSettings(checkpoint_seconds=1))  # fmt: skip
    return task, recorder, storage


def lag(client: Any, rate: int, seconds: float, tmp: Path) -> dict[str, Any]:
    db = f"bench{uuid.uuid4().hex[:8]}"
    client[db]["t"].insert_one({"_id": 0})
    task, recorder, storage = _task(client, db, tmp)
    writer = threading.Thread(target=_writer, args=(client, db, rate, seconds))
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
    lags, changes = [], 0
    for recorded_at, facts in recorder.segments:
        for txn in read_segment(storage, facts, decode=capture.read_segment):
            if txn.xid is not None:  # the writer's (the server's wall clock, on this machine)
                lags.append(recorded_at - datetime.fromisoformat(txn.commit_time).timestamp())
            changes += len(txn.changes)
    client.drop_database(db)
    lags.sort()
    return {
        "transactions": len(lags), "changes": changes, "changes_per_second": changes / elapsed,
        "p50": statistics.median(lags), "p99": lags[int(0.99 * (len(lags) - 1))], "max": lags[-1],
        "segments": len(recorder.segments), "events_per_hour": len(recorder.segments) * 3600 / elapsed,
    }  # fmt: skip


def _bare(coll: Any, transactions: list[Any]) -> float:
    start = time.perf_counter()
    for txn in transactions:
        for entry in txn.changes:
            if entry["op"] == "i":
                coll.replace_one({"_id": entry["o"]["_id"]}, entry["o"], upsert=True)
            elif entry["op"] == "u":
                for step in diff_updates(entry["o"]["diff"]) if "diff" in entry["o"] else [entry["o"]]:
                    coll.update_one(entry["o2"], step)
            elif entry["op"] == "d":
                coll.delete_one(entry["o"])
    return time.perf_counter() - start


def replay(client: Any, url: str, count: int, runs: int, tmp: Path) -> list[tuple[float, float]]:
    db = f"bench{uuid.uuid4().hex[:8]}"
    client[db]["t"].insert_one({"_id": 0})
    task, recorder, storage = _task(client, db, tmp)
    for k in range(count // 60):  # 60 changes a transaction: 30 inserts, 20 updates, 10 deletes
        first = 1 + 30 * k
        with client.start_session() as session, session.start_transaction():
            rows = [{"_id": i, "n": 0, "pad": "x" * 100} for i in range(first, first + 30)]
            client[db]["t"].insert_many(rows, session=session)
            for i in range(first, first + 20):
                client[db]["t"].update_one({"_id": i}, {"$set": {"n": i, "tag": "u"}}, session=session)
            for i in range(first + 20, first + 30):
                client[db]["t"].delete_one({"_id": i}, session=session)
    while task.step().more:
        pass
    transactions = [
        t for _, f in recorder.segments for t in read_segment(storage, f, decode=capture.read_segment)
    ]
    changes = sum(len(t.changes) for t in transactions)
    target = MongoTarget("bench", url, None)
    results = []
    for run in range(runs):
        timings = {}
        for which in ("ours", "bare") if run % 2 == 0 else ("bare", "ours"):
            client.drop_database(db + "r")
            start = time.perf_counter()
            if which == "ours":
                renamed = {f"{db}.t": f"{db}r.t"}
                target.replay(transactions, [], renamed, [db])
                timings[which] = time.perf_counter() - start
            else:
                timings[which] = _bare(client[db + "r"]["t"], transactions)
        results.append((timings["bare"], timings["ours"]))
        print(f"replay run {run + 1}: ours {timings['ours']:.2f}s bare {timings['bare']:.2f}s "
              f"({changes} changes in {len(transactions)} transactions)", flush=True)  # fmt: skip
    client.drop_database(db)
    client.drop_database(db + "r")
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--replay", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:  # a SecantusDB server of its own, with the tests' oplog size
        from tests.support.servers import free_port

        port = free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
             "--storage-path", ":memory:", "--log-level", "WARNING", "--oplog-max-entries", "20000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        with (
            pymongo.MongoClient(url, serverSelectionTimeoutMS=30_000) as client,
            tempfile.TemporaryDirectory() as tmp,
        ):
            client.admin.command("ping")
            found = lag(client, args.rate, args.seconds, Path(tmp))
            print(
                f"lag at {found['changes_per_second']:.0f} changes/s over {args.seconds:.0f} s: "
                f"p50 {found['p50']:.2f}s p99 {found['p99']:.2f}s max {found['max']:.2f}s; "
                f"{found['transactions']} transactions, {found['segments']} segments "
                f"({found['events_per_hour']:.0f} events per hour of capture)",
                flush=True,
            )
            pairs = replay(client, url, args.replay, args.runs, Path(tmp))
            ratios = [bare / ours for bare, ours in pairs]
            print(f"replay median {statistics.median(ratios):.2f}x the bare pymongo loop")
            print(f"at {datetime.now(UTC).isoformat(timespec='seconds')}")
    finally:
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()
