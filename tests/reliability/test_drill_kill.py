"""`kill -9` of the worker in the middle of a restore drill: the next worker claims the drill
again, removes the scratch database the dead attempt left, drills again and passes, and no
scratch database is left behind (real `snapledger worker` processes, real PostgreSQL)."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest

from api.runtime import Runtime
from tests.support import pgdb
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.tally import report

ACTOR = "kill-test"


@pytest.fixture
def backend() -> str:
    """Worker processes share the PostgreSQL event store (SQLite serves one process)."""
    return "postgresql"


def _exists(name: str) -> bool:
    with pgdb.admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_kill_nine_mid_drill_leaves_no_scratch_database(make_config, tmp_path):
    with pgdb.databases("drillkill") as (src,):
        with psycopg.connect(pgdb.url(src), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE big (id bigint PRIMARY KEY, pad text);"
                "INSERT INTO big SELECT i, repeat('k', 400) FROM generate_series(1, 300000) i"
            )
        config = make_config(
            extra=f"""
[sources.pg]
kind = "postgresql"
url = "{pgdb.url(src)}"
schemas = ["public"]

[targets.drills]
kind = "postgresql"
url = "{pgdb.url("postgres")}"

[worker]
lease_seconds = 2
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        app = runtime.app
        workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
        scratch = None
        try:
            victim = workers.start()
            pid = app.create_policy({"name": "big", "source": "pg", "storage": "local"}, ACTOR).id
            sid = app.request_snapshot(pid, ACTOR).id
            wait_until(lambda: app.get_snapshot(sid).status == "completed", 180, "the snapshot")
            did = app.request_drill(pid, {"target": "drills"}, ACTOR).id
            scratch = app.get_drill(did).scratch
            wait_until(
                lambda: app.get_drill(did).status == "running" and app.get_drill(did).items > 0,
                120, "the drill to be restoring",
            )  # fmt: skip
            assert _exists(scratch)
            os.kill(victim.pid, signal.SIGKILL)  # mid-restore into the scratch database
            victim.wait()
            workers.start()
            drill = wait_until(
                lambda: (d := app.get_drill(did)).status in ("completed", "failed") and d,
                180,
                "the drill's end",
            )
            assert drill.status == "completed" and drill.attempt >= 2, (drill.reason, workers.logs()[-2000:])
            assert drill.result["collections"]["public.big"]["rows"] == 300_000
            assert not _exists(scratch)
        finally:
            workers.close()
            runtime.app.close()
            runtime.views.close()
            if scratch is not None:
                with pgdb.admin() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    report(f"drill-kill: killed mid-restore; attempt {drill.attempt} passed, scratch {scratch} removed")
