"""`kill -9` of the worker while a PostgreSQL restore builds its indexes: the next worker
removes what the dead attempt created, restores again, and the target equals the source."""

from __future__ import annotations

import os
import signal

import pytest

from api.runtime import Runtime
from tests.support import pgdb
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.tally import report

LEASE = 2


@pytest.fixture
def backend() -> str:
    """Worker processes share the PostgreSQL event store (SQLite serves one process)."""
    return "postgresql"


def test_a_restore_killed_during_post_data_is_cleaned_and_finished_by_the_next_worker(make_config, tmp_path):
    with pgdb.databases("src", "dst") as (src, dst):
        pgdb.load_fixture(src)
        with pgdb.connect(src) as c:  # indexes that take a few seconds to build
            c.execute(
                """CREATE TABLE shop.big (id bigint PRIMARY KEY, a text, b int);
                   INSERT INTO shop.big SELECT i, md5(i::text), i % 1000 FROM generate_series(1, 600000) i;
                   CREATE INDEX big_a ON shop.big (a); CREATE INDEX big_b ON shop.big (b, a);"""
            )
        config = make_config(
            extra=f"""
[sources.src]
kind = "postgresql"
url = "{pgdb.url(src)}"
schemas = ["shop", "Odd Schema"]

[targets.dst]
kind = "postgresql"
url = "{pgdb.url(dst)}"

[worker]
lease_seconds = {LEASE}
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        app = runtime.app
        workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
        watcher = pgdb.connect(dst)
        try:
            victim = workers.start()
            policy = app.create_policy({"name": "pg", "source": "src", "storage": "local"}, "test").id
            snap_id = app.request_snapshot(policy, "test").id
            wait_until(lambda: app.get_snapshot(snap_id).status == "completed", 120, "the snapshot")
            restore_id = app.request_restore(snap_id, "dst", {}, "test").id

            def building() -> bool:
                return bool(
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name LIKE 'snapledger-restore-%%' "
                        "AND query ILIKE 'CREATE%%INDEX%%big%%'"
                    ).fetchone()[0]
                )

            wait_until(building, 120, "an index build of the restore", every=0.02)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            assert app.get_restore(restore_id).status == "running"
            workers.start()
            done = wait_until(
                lambda: (r := app.get_restore(restore_id)).status in ("completed", "failed") and r,
                180,
                "the restore",
            )
            assert done.status == "completed", workers.logs()[-3000:]
            assert done.attempt >= 2 and done.plan is not None and done.plan["mode"] == "parallel"
            assert pgdb.schema_dump(dst) == pgdb.schema_dump(src)
            assert pgdb.checksums(dst) == pgdb.checksums(src)
            assert pgdb.sequences(dst) == pgdb.sequences(src)
            report(
                f"pg-restore-kill: killed during post-data, attempt {done.attempt} completed, target = source"
            )
        finally:
            watcher.close()
            workers.close()
            runtime.views.close()
            app.close()
