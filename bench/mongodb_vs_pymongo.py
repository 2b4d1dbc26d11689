"""MongoDB backup and restore throughput against bare pymongo loops on the same server.

    python bench/mongodb_vs_pymongo.py [--docs 60000] [--runs 3] [--url mongodb://...]

Without --url it starts a SecantusDB server of its own (the test extra installs it).
Reference backup: raw BSON `find` batches written to a file, no compression. Reference
restore: `insert_many` of the same raw batches into an empty collection. snapledger's side
is a whole run: the backup compresses (gzip, as mongorestore reads it), checksums and counts,
and captures the oplog; the restore verifies the archive first (a MongoDB target cannot
roll back), then inserts. The ratios are reference time / snapledger time, measured pair by
pair in one run: 1.0 means as fast as the bare loop.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymongo  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402

from transfer.runs.backup import run_backup  # noqa: E402
from transfer.runs.restore import run_restore  # noqa: E402
from transfer.sources.mongodb.source import MongoSource  # noqa: E402
from transfer.sources.mongodb.target import MongoTarget  # noqa: E402
from transfer.storage import LocalStorage  # noqa: E402

RAW = CodecOptions(document_class=RawBSONDocument)
BATCH = 1000


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "secantusd-py"
    proc = subprocess.Popen(
        [
            str(exe),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            ":memory:",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    found = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        for _ in range(200):
            try:
                with pymongo.MongoClient(found, serverSelectionTimeoutMS=500) as c:
                    c.admin.command("ping")
                    break
            except pymongo.errors.PyMongoError:
                time.sleep(0.1)
        yield found
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def seed(client: pymongo.MongoClient, docs: int, db: str = "benchsrc") -> None:
    client.drop_database(db)
    coll = client[db].orders
    for start in range(0, docs, BATCH):
        coll.insert_many(
            [
                {
                    "_id": i,
                    "customer": f"c{i % 997}",
                    "lines": [{"sku": i % 31, "qty": i % 7}],
                    "note": "x" * 200,
                }
                for i in range(start, min(docs, start + BATCH))
            ]
        )


def bare_backup(client: pymongo.MongoClient, out: Path) -> float:
    start = time.perf_counter()
    with open(out, "wb") as f:
        for doc in client.benchsrc.get_collection("orders", codec_options=RAW).find({}, batch_size=BATCH):
            f.write(doc.raw)
    return time.perf_counter() - start


def bare_restore(client: pymongo.MongoClient, dump: Path, workers: int = 1) -> float:
    client.drop_database("benchsrcdst")
    data = dump.read_bytes()
    docs, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        docs.append(RawBSONDocument(data[pos : pos + length]))
        pos += length
    start = time.perf_counter()
    coll = client.benchsrcdst.orders
    batches = [docs[i : i + BATCH] for i in range(0, len(docs), BATCH)]
    if workers == 1:
        for batch in batches:
            coll.insert_many(batch, ordered=True)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda b: coll.insert_many(b, ordered=False), batches))
    return time.perf_counter() - start


def ours_backup(url: str, storage: LocalStorage, db: str = "benchsrc") -> float:
    start = time.perf_counter()
    source = MongoSource("bench", url, None, [db])
    run_backup(source, storage, f"{db}.tar", [], [], {}, lambda *a: None, lambda: False, level=1)
    return time.perf_counter() - start


def ours_restore(
    url: str, client: pymongo.MongoClient, storage: LocalStorage, db: str = "benchsrc", workers: int = 1
) -> float:
    client.drop_database(f"{db}dst")
    target = MongoTarget("bench", url, None, "fail", insertion_workers=workers)
    moved = {f"{db}.orders": f"{db}dst.orders"}
    start = time.perf_counter()
    run_restore(storage, f"{db}.tar", target, [], lambda *a: None, lambda: False, mapping=moved)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url")
    parser.add_argument("--workers", type=int, default=1, help="insertion workers, both sides")
    args = parser.parse_args()
    with server(args.url) as url, pymongo.MongoClient(url) as client, tempfile.TemporaryDirectory() as tmp:
        seed(client, args.docs)
        seed(client, 1, "benchone")
        storage = LocalStorage("bench", Path(tmp) / "store")
        dump = Path(tmp) / "orders.bson"
        ratios: dict[str, list[float]] = {"backup": [], "restore": [], "backup data": [], "restore data": []}
        for run in range(args.runs):
            # The server slows as its capped oplog fills and trims, so the order of the pair
            # alternates from run to run: neither side always meets the fuller oplog.
            first = run % 2 == 0
            if first:
                ref = bare_backup(client, dump)
            ours = ours_backup(url, storage)
            fixed = ours_backup(url, storage, "benchone")
            if not first:
                ref = bare_backup(client, dump)
            if first:
                ref_r = bare_restore(client, dump, args.workers)
            ours_r = ours_restore(url, client, storage, workers=args.workers)
            fixed_r = ours_restore(url, client, storage, "benchone", args.workers)
            if not first:
                ref_r = bare_restore(client, dump, args.workers)
            ratios["backup"].append(ref / ours)
            ratios["restore"].append(ref_r / ours_r)
            ratios["backup data"].append(ref / max(ours - fixed, 1e-3))
            ratios["restore data"].append(ref_r / max(ours_r - fixed_r, 1e-3))
            print(
                f"run {run + 1}: backup bare {ref:.2f}s ours {ours:.2f}s (fixed {fixed:.2f}s); "
                f"restore bare {ref_r:.2f}s ours {ours_r:.2f}s (fixed {fixed_r:.2f}s)",
                flush=True,
            )
        mib = dump.stat().st_size / 1_048_576
        print(f"{args.docs} documents, {mib:.1f} MiB of BSON")
        for what, values in ratios.items():
            print(f"{what:13s} median {statistics.median(values):.2f}x the bare loop")


if __name__ == "__main__":
    main()
