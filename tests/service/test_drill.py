"""Restore drills, through the worker: the newest completed snapshot restored into a scratch
copy on the drill target, checked row for row against its archive and with the policy's
checks, its time to restore measured, and the scratch copy gone afterwards, pass or fail."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.runtime import Runtime
from domain.drill import PASSED, SCRATCH_PREFIX
from domain.errors import InvalidTransition, InvalidValue
from domain.snapshot import COMPLETED
from tests.support import pgdb
from tests.support.servers import wait_until

ACTOR = "drill-test"


def _left(drill: Any) -> bool:
    """Whether the drill's scratch database is still there (other tests drill beside it)."""
    assert drill.scratch.startswith(SCRATCH_PREFIX)
    with pgdb.admin() as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (drill.scratch,)).fetchone()
            is not None
        )


@pytest.fixture
def pg_runtime(make_config, tmp_path: Path) -> Any:
    with pgdb.databases("drillsrc") as (src,):
        with psycopg.connect(pgdb.url(src), autocommit=True) as conn:
            conn.execute(
                "CREATE SCHEMA shop;"
                "CREATE TABLE shop.orders (id int PRIMARY KEY, note text, at timestamptz);"
                "INSERT INTO shop.orders SELECT i, 'n' || i, '2026-01-01'::timestamptz + i * interval '1 h' "
                "FROM generate_series(1, 500) i;"
                "CREATE TABLE shop.lines (order_id int REFERENCES shop.orders, qty int);"
                "INSERT INTO shop.lines SELECT i % 500 + 1, i FROM generate_series(1, 1000) i;"
            )
        config = make_config(
            extra=f"""
[sources.pg]
kind = "postgresql"
url = "{pgdb.url(src)}"
schemas = ["shop"]

[targets.drills]
kind = "postgresql"
url = "{pgdb.url("postgres")}"

[targets.files]
kind = "ndjson"
path = "{tmp_path / "drills"}"

[worker]
scheduler = false
"""
        )
        rt = Runtime.build(config).start()
        try:
            yield rt, src
        finally:
            rt.close()


def _run(rt: Runtime, drill_id: uuid.UUID) -> Any:
    rt.nudge_worker()
    return wait_until(
        lambda: (d := rt.app.get_drill(drill_id)).status in (PASSED, "failed") and d, 120, "the drill to end"
    )


def _policy_with_snapshot(rt: Runtime, source: str, name: str) -> uuid.UUID:
    pid = rt.app.create_policy({"name": name, "source": source, "storage": "local"}, ACTOR).id
    sid = rt.app.request_snapshot(pid, ACTOR).id
    rt.nudge_worker()
    wait_until(lambda: rt.app.get_snapshot(sid).status == COMPLETED, 120, "the snapshot")
    return pid


def test_a_postgresql_drill_restores_checks_and_leaves_no_scratch_database(pg_runtime):
    rt, _ = pg_runtime
    pid = _policy_with_snapshot(rt, "pg", "shop")
    with pytest.raises(InvalidValue) as bad:
        rt.app.request_drill(pid, {"target": "drills", "checks": "SELECT 1"}, ACTOR)
    assert bad.value.field == "checks"
    outcome = rt.app.request_drill(
        pid,
        {"target": "drills", "checks": [
            "SELECT count(*) = 500 FROM shop.orders",
            "SELECT NOT EXISTS (SELECT 1 FROM shop.lines l LEFT JOIN shop.orders o ON o.id = l.order_id "
            "WHERE o.id IS NULL)",
        ]},
        ACTOR,
    )  # fmt: skip
    drill = _run(rt, outcome.id)
    assert drill.status == PASSED, drill.reason
    assert drill.result["collections"]["shop.orders"] == {
        **drill.result["collections"]["shop.orders"], "rows": 500, "restored_rows": 500, "ok": True
    }  # fmt: skip
    assert drill.result["collections"]["shop.lines"]["rows"] == 1000
    assert [c["ok"] for c in drill.result["checks"]] == [True, True]
    assert drill.rto_seconds is not None and drill.rto_seconds > 0
    assert not _left(drill)


def test_a_check_that_answers_false_fails_the_drill_and_still_removes_the_copy(pg_runtime):
    rt, _ = pg_runtime
    pid = _policy_with_snapshot(rt, "pg", "shop2")
    outcome = rt.app.request_drill(
        pid, {"target": "drills", "checks": ["SELECT count(*) = 499 FROM shop.orders"]}, ACTOR
    )
    drill = _run(rt, outcome.id)
    assert drill.status == "failed" and "check 1 answered False" in (drill.reason or "")
    assert not _left(drill)


def test_a_check_cannot_write(pg_runtime):
    rt, _ = pg_runtime
    pid = _policy_with_snapshot(rt, "pg", "shop3")
    outcome = rt.app.request_drill(
        pid, {"target": "drills", "checks": ["DELETE FROM shop.orders RETURNING true"]}, ACTOR
    )
    drill = _run(rt, outcome.id)
    assert drill.status == "failed" and "read-only transaction" in (drill.reason or "")


def test_a_snapshot_whose_content_differs_fails_the_drill_naming_the_table(pg_runtime, monkeypatch):
    """The archive's checksums hold, but the copy differs from it (as a target that changed
    rows on the way would): the row-level digest names the table."""
    from service import drill as service_drill
    from transfer.runs import drill as checks

    rt, _ = pg_runtime
    pid = _policy_with_snapshot(rt, "pg", "shop4")
    real = service_drill.read_back

    def tampered(place: Any, manifest: dict[str, Any]) -> dict[str, checks.RowDigest]:
        with psycopg.connect(place.target.url, autocommit=True) as conn:
            conn.execute("UPDATE shop.orders SET note = 'changed' WHERE id = 7")
        return real(place, manifest)

    monkeypatch.setattr(service_drill, "read_back", tampered)
    drill = _run(rt, rt.app.request_drill(pid, {"target": "drills"}, ACTOR).id)
    assert drill.status == "failed" and "differs from the archive in shop.orders" in (drill.reason or "")
    assert not _left(drill)


def test_an_ndjson_drill_passes_and_its_directory_goes(pg_runtime, tmp_path: Path):
    rt, _ = pg_runtime
    pid = _policy_with_snapshot(rt, "secured", "files")
    drill = _run(rt, rt.app.request_drill(pid, {"target": "files"}, ACTOR).id)
    assert drill.status == PASSED, drill.reason
    assert all(c["ok"] and c["rows"] > 0 for c in drill.result["collections"].values())
    assert not (tmp_path / "drills" / drill.scratch).exists()


def test_a_policy_without_a_completed_snapshot_has_nothing_to_drill(pg_runtime):
    rt, _ = pg_runtime
    pid = rt.app.create_policy({"name": "empty", "source": "pg", "storage": "local"}, ACTOR).id
    with pytest.raises(InvalidTransition, match="no completed snapshot"):
        rt.app.request_drill(pid, {"target": "drills"}, ACTOR)


def test_a_mongodb_drill_restores_under_fresh_names_and_drops_them(make_config, mongo_url, mongo_target_url):
    import pymongo

    from tests.support.mongo import database_names

    shop, crm = database_names("d")
    with pymongo.MongoClient(mongo_url) as src, pymongo.MongoClient(mongo_target_url) as dst:
        src[shop]["orders"].insert_many([{"_id": i, "n": i, "nested": {"a": [i, None]}} for i in range(300)])
        src[crm]["people"].insert_many([{"email": f"p{i}@example.com"} for i in range(40)])
        config = make_config(
            extra=f"""
[sources.mongo]
kind = "mongodb"
url = "{mongo_url}"
databases = ["{shop}", "{crm}"]

[targets.mongo_drills]
kind = "mongodb"
url = "{mongo_target_url}"

[worker]
scheduler = false
"""
        )
        rt = Runtime.build(config).start()
        try:
            pid = _policy_with_snapshot(rt, "mongo", "docs")
            drill = _run(rt, rt.app.request_drill(pid, {"target": "mongo_drills"}, ACTOR).id)
            assert drill.status == PASSED, drill.reason
            assert {n: c["rows"] for n, c in drill.result["collections"].items()} == {
                f"{shop}.orders": 300, f"{crm}.people": 40
            }  # fmt: skip
            assert not [d for d in dst.list_database_names() if d.startswith(drill.scratch)]
            assert shop not in dst.list_database_names()  # nothing under the source's own names
        finally:
            rt.close()
            for client in (src, dst):
                client.drop_database(shop)
                client.drop_database(crm)
