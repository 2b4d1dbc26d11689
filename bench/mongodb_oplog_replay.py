"""Oplog replay on restore: ordered bulk writes per collection against one round trip per
entry, on the same server in one run.

    python bench/mongodb_oplog_replay.py [--entries 5000] [--url mongodb://...]

Without --url it starts a SecantusDB server of its own (the test extra installs it). The
entries are inserts and then version 2 diff updates of the same documents, as a busy
collection's oplog holds them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pymongo  # noqa: E402
from mongodb_vs_pymongo import server  # noqa: E402
from pymongo import ReplaceOne  # noqa: E402

from transfer.sources.mongodb.oplog import Replayer, update_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=5000, help="documents: each inserted, then updated")
    parser.add_argument("--url")
    args = parser.parse_args()
    n = args.entries
    entries = [{"op": "i", "ns": "replay.a", "o": {"_id": i, "v": 0}} for i in range(n)]
    entries += [
        {"op": "u", "ns": "replay.a", "o2": {"_id": i}, "o": {"$v": 2, "diff": {"u": {"v": 1}}}}
        for i in range(n)
    ]
    with server(args.url) as url, pymongo.MongoClient(url) as client:
        client.drop_database("replay")
        start = time.perf_counter()
        for e in entries:  # the reference: one round trip per entry
            models = (
                [ReplaceOne({"_id": e["o"]["_id"]}, e["o"], upsert=True)]
                if e["op"] == "i"
                else update_models(e["o2"], e["o"])
            )
            for model in models:
                client.replay.a.bulk_write([model], ordered=True)
        one = time.perf_counter() - start
        client.drop_database("replay")
        start = time.perf_counter()
        replayer = Replayer(client, lambda ns: ns, "bench")
        for e in entries:
            replayer.apply(e)
        replayer.finish()
        bulk = time.perf_counter() - start
        assert client.replay.a.count_documents({"v": 1}) == n
    print(f"{len(entries)} entries: one at a time {one:.2f}s, ordered bulk {bulk:.2f}s ({one / bulk:.1f}x)")


if __name__ == "__main__":
    main()
