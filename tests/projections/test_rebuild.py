"""A rebuilt view equals the incrementally built one, row for row."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from api.cli import main
from api.rebuild import PARALLEL_FROM, RebuildFailed, _result, jobs_for
from api.runtime import Runtime
from projections.runner import partition, rebuild
from projections.views import ALL_VIEWS, View


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
            app.record_policy_deleted(pid, True, "bob", set())
        else:
            snap = app.get_snapshot(app.request_snapshot(pid, "alice").id)
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

    # Three processes (this one and two `python -m api.rebuild` children) give the same rows.
    assert main(["--config", str(config_path(config)), "projections", "rebuild", "--jobs", "3"]) == 0
    again = Runtime.build(config)
    try:
        assert _rows(again) == incremental
        assert again.runner.position() == total
    finally:
        again.views.close()
        again.app.close()


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


def test_rebuild_jobs_are_checked(make_config, capsys):
    config = make_config()
    for bad in ("0", "x", "65"):
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(config_path(config)), "projections", "rebuild", "--jobs", bad])
        assert exit_.value.code == 2
        assert f"jobs must be 1-64, got {bad!r}" in capsys.readouterr().err


def test_partition_balances_views_and_makes_no_useless_group():
    assert partition(list(ALL_VIEWS), 1) == [list(ALL_VIEWS)]
    two = partition(list(ALL_VIEWS), 2)
    assert sorted(sum(two, [])) == sorted(ALL_VIEWS)
    assert sorted(sum(ALL_VIEWS[n].cost for n in group) for group in two) == [4, 5]  # of 9
    # A fourth process would not lower the heaviest group (backups alone): three groups.
    assert len(partition(list(ALL_VIEWS), 4)) == 3
    assert partition(["backups"], 8) == [["backups"]]


def test_jobs_by_default_follow_the_log_length_and_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    names = list(ALL_VIEWS)
    assert jobs_for(PARALLEL_FROM - 1, names, None) == 1
    assert jobs_for(PARALLEL_FROM, names, None) == len(names)
    assert jobs_for(PARALLEL_FROM, ["backups", "tasks"], None) == 2
    assert jobs_for(10, names, 3) == 3  # asked for: as asked
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert jobs_for(10**7, names, None) == 1


def test_a_failed_child_replay_is_reported_with_its_views():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdout=subprocess.PIPE)
    with pytest.raises(RebuildFailed, match=r"replay of backups, tasks failed \(exit 3"):
        _result(child, ["backups", "tasks"])


def _probe_view() -> View:
    """Counts each run's events by read-modify-write: a batch applied twice, or applied on
    rows it did not read, shows in the counts."""
    probe = View(
        name="probe",
        table="probe",
        ddl=["CREATE TABLE IF NOT EXISTS probe (id TEXT PRIMARY KEY, n BIGINT NOT NULL, position BIGINT)"],
    )

    @probe.on("SnapshotRequested", "SnapshotStarted", "SnapshotProgressed", "SnapshotCompleted")
    def count(rows, e, position):
        row = rows.get("probe", str(e.originator_id))
        if row is None:
            rows.insert("probe", {"id": str(e.originator_id), "n": 1, "position": position})
        else:
            rows.update("probe", str(e.originator_id), {"n": row["n"] + 1, "position": position})

    return probe


def _runs(app, count: int) -> None:
    policy = app.create_policy({"name": "probe", "source": "demo", "storage": "local"}, "ops").id
    for _ in range(count):
        snap = app.get_snapshot(app.request_snapshot(policy, "ops").id)
        snap.start("w", "t", 60, datetime.now(UTC))
        snap.progress(1, 1, 50.0, "orders", datetime.now(UTC))
        snap.complete(1, 1, {"orders": {"items": 1}}, "ab" * 32, datetime.now(UTC))
        app.record(snap)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_runner_holds_the_write_lock_only_to_write(make_config):
    """While a batch's handlers run, another writer of the views file is not kept waiting
    (a parallel rebuild's other process), and the batch still lands whole."""
    import sqlite3

    from projections.runner import ProjectionRunner

    runtime = Runtime.build(make_config())
    try:
        _runs(runtime.app, 3)
        probe = _probe_view()
        seen: list[str] = []
        inner = probe.handlers["SnapshotStarted"]

        def started(rows, e, position):
            other = sqlite3.connect(runtime.views.path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the runner held it
                other.execute("COMMIT")
                seen.append("free")
            finally:
                other.close()
            inner(rows, e, position)

        probe.handlers["SnapshotStarted"] = started
        runner = ProjectionRunner(runtime.app, runtime.views, [probe], batch_size=1000)
        assert runner.catch_up() == runtime.app.recorder.max_notification_id()
        assert seen == ["free"] * 3
        counts = [r["n"] for r in runtime.views.query("SELECT n FROM probe")]
        assert counts == [4, 4, 4]  # requested, started, progressed, completed
    finally:
        runtime.views.close()
        runtime.app.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_batch_is_void_when_another_runner_moved_the_view_meanwhile(make_config):
    import threading

    from projections.runner import PositionConflict, ProjectionRunner

    runtime = Runtime.build(make_config())
    try:
        _runs(runtime.app, 4)
        probe = _probe_view()
        inner = probe.handlers["SnapshotCompleted"]
        other = ProjectionRunner(runtime.app, runtime.views, [_probe_view()], batch_size=5)
        moved: list[int] = []

        def completed(rows, e, position):
            if not moved:  # the first time only: another runner applies the log meanwhile
                t = threading.Thread(target=lambda: moved.append(other.catch_up()))
                t.start()
                t.join(30)
            inner(rows, e, position)

        probe.handlers["SnapshotCompleted"] = completed
        runner = ProjectionRunner(runtime.app, runtime.views, [probe], batch_size=1000)
        with pytest.raises(PositionConflict):
            runner.process_batch()
        assert moved and moved[0] > 0
        assert runner.catch_up() == 0  # nothing left: the other runner applied it all
        counts = [r["n"] for r in runtime.views.query("SELECT n FROM probe")]
        assert counts == [4, 4, 4, 4]  # each event counted once, not once per runner
    finally:
        runtime.views.close()
        runtime.app.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_task_queue_events_of_a_run_that_ends_in_the_batch_are_skipped(make_config):
    """A run requested and ended within one batch leaves no task row: none of its events
    need applying. If its request was applied before the batch, its end still must be."""
    from projections.runner import kind_of, voided
    from projections.views import tasks

    runtime = Runtime.build(make_config())
    try:
        _runs(runtime.app, 2)
        notes = runtime.app.recorder.select_notifications(start=1, limit=100)
        handled = [n for n in notes if kind_of(n.topic) in tasks.handlers]
        assert voided(tasks, notes, 0) == {n.id for n in handled}

        first = [n for n in handled if n.originator_id == handled[0].originator_id]
        requested, ended = first[0], first[-1]
        assert (kind_of(requested.topic), kind_of(ended.topic)) == ("SnapshotRequested", "SnapshotCompleted")
        void = voided(tasks, notes, requested.id)  # the request was applied earlier: the row exists
        assert ended.id not in void and {n.id for n in first[1:-1]} <= void
        assert voided(ALL_VIEWS["backups"], notes, 0) == frozenset()  # records outlive their runs
    finally:
        runtime.views.close()
        runtime.app.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_cli_rebuild_exits_1_naming_the_views_a_failed_child_left(make_config, monkeypatch, capsys):
    config = make_config()

    def failing_child(config, names):
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdout=subprocess.PIPE)

    monkeypatch.setattr("api.rebuild._start", failing_child)
    assert main(["--config", str(config_path(config)), "projections", "rebuild", "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "error: the replay of policies, tasks failed (exit 3" in err
