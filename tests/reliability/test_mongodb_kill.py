"""`kill -9` of the worker in the middle of a MongoDB backup and of a MongoDB restore: the
next worker claims the run again and completes it, and the target ends with exactly the
source's documents, none twice (real `snapledger worker` processes, real servers)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pymongo
import pytest

from api.runtime import Runtime
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.tally import report
from transfer.runs.verify import verify_archive

ACTOR = "kill-test"
DOCS = 30_000


@pytest.fixture
def backend() -> str:
    """Worker processes share the PostgreSQL event store (SQLite serves one process)."""
    return "postgresql"


def _all(client: Any, db: str) -> dict[str, list[Any]]:
    return {
        name: list(client[db][name].find().sort("_id", 1))
        for name in sorted(client[db].list_collection_names())
    }


def _kill_and_finish(victim: Any, workers: WorkerProcesses, load: Any, what: str) -> Any:
    """Kills the worker running the run, starts the next one, and waits for the run to end:
    completed, by a second attempt. Answers the live worker."""
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    victim = workers.start()
    run = wait_until(lambda: (r := load()).status in ("completed", "failed") and r, 120, f"{what} end")
    assert run.status == "completed" and run.attempt >= 2, (what, run.status, workers.logs()[-2000:])
    return victim


def test_kill_nine_mid_mongodb_backup_and_restore(make_config, mongo_url, mongo_target_url, tmp_path):
    with pymongo.MongoClient(mongo_url) as src, pymongo.MongoClient(mongo_target_url) as dst:
        src.drop_database("killsrc")
        dst.drop_database("killsrc")
        for name in ("orders", "events"):
            src.killsrc[name].insert_many([{"_id": i, "pad": "k" * 1500} for i in range(DOCS // 2)])
        config = make_config(
            extra=f"""
[sources.mongo]
kind = "mongodb"
url = "{mongo_url}"
databases = ["killsrc"]

[targets.mongo_dst]
kind = "mongodb"
url = "{mongo_target_url}"
existing = "fail"

[worker]
lease_seconds = 2
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        app = runtime.app
        workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
        policy = app.create_policy({"name": "kill", "source": "mongo", "storage": "local"}, ACTOR).id
        try:
            victim = workers.start()
            sid = app.request_snapshot(policy, ACTOR).id
            snap = wait_until(
                lambda: (s := app.get_snapshot(sid)).status == "running" and s.percent > 5 and s,
                60,
                "backup under way",
            )
            assert snap.percent < 100
            victim = _kill_and_finish(victim, workers, lambda: app.get_snapshot(sid), "backup")
            done = app.get_snapshot(sid)
            assert verify_archive(runtime.resources.storages["local"], done.archive_key).items == DOCS

            rid = app.request_restore(sid, "mongo_dst", {}, ACTOR).id
            wait_until(lambda: app.get_restore(rid).status == "running", 60, "restore claim")
            landed = wait_until(
                lambda: sum(dst.killsrc[n].estimated_document_count() for n in ("orders", "events")),
                60,
                "documents in",
            )
            assert landed < DOCS
            _kill_and_finish(victim, workers, lambda: app.get_restore(rid), "restore")
            assert _all(dst, "killsrc") == _all(src, "killsrc")  # every document once, none twice
        finally:
            workers.close()
            runtime.close()
    report(
        f"mongodb-kill: killed at {snap.percent:.0f}% of a backup and after {landed} of {DOCS} documents "
        "of a restore; both re-claimed and completed"
    )
