"""A rebuilt view equals the incrementally built one, row for row."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from api.cli import main
from api.runtime import Runtime
from projections.runner import rebuild
from projections.views import ALL_VIEWS


def _rows(runtime: Runtime) -> dict[str, list[dict]]:
    return {v.table: runtime.views.query(f"SELECT * FROM {v.table} ORDER BY id") for v in ALL_VIEWS.values()}


def _mixed_history(app, rnd: random.Random) -> None:
    """A few hundred events of every kind, written straight through the Application."""
    now = lambda: datetime.now(UTC)  # noqa: E731
    policies = [
        app.create_policy({"name": f"p{i}", "source": "demo", "storage": "local"}, "ops").id for i in range(6)
    ]
    for step in range(60):
        pid = rnd.choice(policies)
        policy = app.get_policy(pid)
        if policy.status == "deleted":
            continue
        roll = rnd.random()
        if roll < 0.1:
            app.edit_policy(pid, {"schedule": rnd.choice(["@daily", "0 1 * * *", None])}, "bob")
        elif roll < 0.15:
            if policy.status == "active":
                app.stop_policy(pid, "bob")
        elif roll < 0.18:
            app.rebuild_policy(pid, "bob")
        elif roll < 0.2 and step > 40:
            app.delete_policy(pid, True, "bob", set())
        else:
            snap = app.get_snapshot(app.take_snapshot(pid, "alice").id)
            snap.start("w1", f"ddt-{step}", 60, now())
            for pct in (10.0, 40.0, 80.0):
                snap.progress(int(pct * 10), int(pct * 1000), pct, "orders", now())
            fate = rnd.random()
            if fate < 0.7:
                snap.complete(1000, 100000, {"orders": {"items": 1000}}, "ab" * 32, now())
                app.record(snap)
                if rnd.random() < 0.5:
                    rid = app.request_restore(snap.id, "scratch", {}, "carol").id
                    restore = app.get_restore(rid)
                    restore.start("w2", f"ddt-r{step}", 60, now())
                    restore.progress(500, 5000, 50.0, "orders", now())
                    restore.complete(1000, 100000, {"orders": {"ok": True}}, now())
                    app.record(restore)
            elif fate < 0.85:
                snap.fail("source went away", now())
                app.record(snap)
            else:
                app.record(snap)
                app.stop_snapshot(snap.id, "dave")


def test_rebuilt_views_equal_incremental(make_config):
    config = make_config()
    runtime = Runtime.build(config)
    try:
        _mixed_history(runtime.app, random.Random(7))
        total = runtime.app.recorder.max_notification_id()
        assert total >= 300
        # Incremental: small batches, as a live runner would see them.
        runtime.runner.batch_size = 7
        runtime.runner.catch_up()
        incremental = _rows(runtime)
        assert len(incremental["backup_records"]) > 30 and incremental["restore_records"]
        statuses = {r["status"] for r in incremental["backup_records"]}
        assert {"requested", "running", "completed", "failed", "stopped"} <= statuses  # every state replays

        runtime.runner.batch_size = 500
        counts = rebuild(runtime.runner, list(ALL_VIEWS))
        assert counts == {name: total for name in ALL_VIEWS}
        assert _rows(runtime) == incremental
        assert runtime.runner.position() == total
    finally:
        runtime.views.close()
        runtime.app.close()

    # The CLI rebuild of one view gives the same rows too.
    assert main(["--config", str(config_path(config)), "projections", "rebuild", "backups"]) == 0
    again = Runtime.build(config)
    try:
        assert _rows(again) == incremental
    finally:
        again.views.close()
        again.app.close()
    assert main(["--config", str(config_path(config)), "projections", "rebuild", "nope"]) == 2


def config_path(config) -> str:
    return str(config.data_dir.parent / "snapledger.toml")


def test_concurrent_runners_apply_every_event_once(make_config):
    """Several runners (API process, CLI, a second server) catching up the same views at once
    neither deadlock nor double-apply: the rows equal one serial catch-up."""
    import threading

    from projections.runner import ProjectionRunner

    config = make_config()
    runtime = Runtime.build(config)
    try:
        _mixed_history(runtime.app, random.Random(3))
        runners = [ProjectionRunner(runtime.app, runtime.views, batch_size=size) for size in (3, 5, 11, 17)]
        errors: list[BaseException] = []

        def run(r: ProjectionRunner) -> None:
            try:
                r.catch_up()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        concurrent = _rows(runtime)
        rebuild(runtime.runner, list(ALL_VIEWS))
        assert _rows(runtime) == concurrent
    finally:
        runtime.views.close()
        runtime.app.close()
