"""Many worker processes on PostgreSQL: no double work, crash recovery, fencing by version."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from api.runtime import Runtime
from tests.support.api import PG_URL
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.views import assert_views_equal_rebuild
from transfer.runs.verify import verify_archive

LEASE = 3


@pytest.fixture
def backend() -> str:
    """Several processes share work through the PostgreSQL event store (SQLite: one process)."""
    return "postgresql"


@pytest.fixture
def pg_config(make_config, big_source):
    return make_config(
        extra=f"""
[sources.big]
path = "{big_source}"

[worker]
lease_seconds = {LEASE}
scheduler = false
"""
    )


@pytest.fixture
def workers(pg_config, tmp_path):
    pool = WorkerProcesses(str(tmp_path / "snapledger.toml"), tmp_path)
    yield pool
    pool.close()


@pytest.fixture
def runtime(pg_config):
    rt = Runtime.build(pg_config)
    yield rt
    rt.views.close()
    rt.app.close()


def _events(runtime: Runtime, aggregate_id) -> list[str]:
    return [type(e).__name__ for e in runtime.app.repository.event_store.get(aggregate_id)]


def test_workers_share_work_without_doing_any_twice(runtime, workers):
    policies = [
        runtime.app.create_policy({"name": f"p{i}", "source": "demo", "storage": "local"}, "t").id
        for i in range(3)
    ]
    snaps = [runtime.app.request_snapshot(p, "t").id for p in policies for _ in range(3)]
    for _ in range(3):
        workers.start()
    wait_until(
        lambda: all(runtime.app.get_snapshot(s).status == "completed" for s in snaps), what="all snapshots"
    )
    for s in snaps:
        assert Counter(_events(runtime, s))["SnapshotStarted"] == 1  # claimed once, run once
    # At most one snapshot per policy at a time: the runs of one policy never overlap. Told
    # by positions in the log, not by wall-clock times (a claim's time is read before its
    # append, so on a loaded machine it can precede the previous run's last event).
    notes = list(runtime.app.recorder.select_notifications(start=1, limit=100_000))
    started = {(n.originator_id, n.topic.rsplit(".", 1)[-1]): n.id for n in notes}
    for p in policies:
        runs = sorted(
            (started[(s, "SnapshotStarted")], started[(s, "SnapshotCompleted")])
            for s in snaps
            if runtime.app.get_snapshot(s).policy_id == p
        )
        for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
            assert end < start
    workers_seen = {runtime.app.get_snapshot(s).worker for s in snaps}
    assert len(workers_seen) >= 2, "the work was shared"
    assert_views_equal_rebuild(runtime)


def _start_big_backup(runtime: Runtime):
    pid = runtime.app.create_policy({"name": "big", "source": "big", "storage": "local"}, "t").id
    return runtime.app.request_snapshot(pid, "t").id


def test_killed_worker_task_is_reclaimed_and_completes(runtime, workers, pg_config):
    sid = _start_big_backup(runtime)
    first = workers.start()
    wait_until(lambda: runtime.app.get_snapshot(sid).percent > 0, what="the backup to be under way")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert runtime.app.get_snapshot(sid).status == "running"
    workers.start()
    snap = wait_until(
        lambda: (s := runtime.app.get_snapshot(sid)).status == "completed" and s,
        timeout=90,
        what="re-claimed backup",
    )
    assert snap.attempt == 2
    storage = runtime.resources.storages["local"]
    assert verify_archive(storage, snap.archive_key).items == 40_000
    leftovers = [p.name for p in storage.root.rglob("*") if p.is_file() and "partial" in p.name]
    assert leftovers == [], "the dead attempt's partial archive was cleaned up"


def test_killed_worker_restore_is_reclaimed(runtime, workers):
    sid = _start_big_backup(runtime)
    workers.start()
    wait_until(lambda: runtime.app.get_snapshot(sid).status == "completed", timeout=90, what="backup")
    workers.close()
    workers.procs.clear()
    rid = runtime.app.request_restore(sid, "scratch", {}, "t").id
    first = workers.start()
    wait_until(lambda: runtime.app.get_restore(rid).percent > 0, what="the restore to be under way")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    workers.start()
    restore = wait_until(
        lambda: (r := runtime.app.get_restore(rid)).status == "completed" and r,
        timeout=90,
        what="re-claimed restore",
    )
    assert restore.attempt == 2
    scratch = runtime.config.targets["scratch"].path
    assert sum(1 for _ in open(scratch / "events.ndjson", "rb")) == 40_000
    assert not list(scratch.glob("*partial*"))


def test_frozen_worker_cannot_complete_after_its_lease(runtime, workers):
    sid = _start_big_backup(runtime)
    frozen = workers.start()
    wait_until(lambda: runtime.app.get_snapshot(sid).percent > 0, what="the backup to be under way")
    os.kill(frozen.pid, signal.SIGSTOP)
    workers.start()
    snap = wait_until(
        lambda: (s := runtime.app.get_snapshot(sid)).status == "completed" and s,
        timeout=240,  # a whole second run of the big backup, on a loaded two-core machine
        what="the other worker to finish",
    )
    frozen_worker = runtime.app.repository.event_store.get(sid)
    version = snap.version
    os.kill(frozen.pid, signal.SIGCONT)
    time.sleep(LEASE)  # the thawed worker tries to go on; its appends must all conflict
    assert runtime.app.get_snapshot(sid).version == version
    names = _events(runtime, sid)
    assert names.count("SnapshotCompleted") == 1 and names[-1] == "SnapshotCompleted"
    assert snap.attempt == 2 and snap.worker != next(
        e.worker for e in frozen_worker if type(e).__name__ == "SnapshotStarted"
    )
    storage = runtime.resources.storages["local"]
    assert verify_archive(storage, snap.archive_key).items == 40_000
    wait_until(
        lambda: not [p for p in storage.root.rglob("*") if "partial" in p.name],
        timeout=20,
        what="the thawed worker to drop its own partial file",
    )
    assert PG_URL  # these tests ran against PostgreSQL


class _SlowSource:
    """A source whose first chunk takes longer than a lease: only heartbeats keep it."""

    kind = "ndjson"
    name = "slow"
    parallel = 1
    parallel_safe = False
    isolated_collections = False  # a Source and its BackupSession (transfer/ports.py)
    has_schema = False

    def open(self):
        import contextlib

        @contextlib.contextmanager
        def session():
            yield self

        return session()

    def estimates(self):
        return {"things": 10}

    def definition(self, name):
        return None

    def schema_members(self, names, codec):
        return []

    def point_in_time(self):
        from transfer.ports import PointInTime

        return PointInTime(False, "a test source")

    def read_chunks(self, name, on_raw):
        time.sleep(2 * LEASE)
        on_raw(10)
        yield b'{"a":1}\n'


def test_heartbeats_hold_the_lease_through_a_silent_step(runtime):
    from service.worker import Worker

    runtime.resources.sources["slow"] = _SlowSource()
    runtime.app.catalog = runtime.app.catalog.__class__(
        sources=runtime.app.catalog.sources | {"slow"},
        storages=runtime.app.catalog.storages,
        targets=runtime.app.catalog.targets,
    )
    pid = runtime.app.create_policy({"name": "slow", "source": "slow", "storage": "local"}, "t").id
    sid = runtime.app.request_snapshot(pid, "t").id
    runtime.runner.start()
    try:
        one = Worker(runtime.app, runtime.resources, runtime.find_work, "one", lease_seconds=LEASE).start()
        wait_until(lambda: runtime.app.get_snapshot(sid).status == "running", what="claim")
        two = Worker(runtime.app, runtime.resources, runtime.find_work, "two", lease_seconds=LEASE).start()
        snap = wait_until(
            lambda: (s := runtime.app.get_snapshot(sid)).status == "completed" and s, what="completion"
        )
        one.stop()
        two.stop()
    finally:
        runtime.runner.stop()
    assert snap.attempt == 1 and snap.worker == "one"  # never re-claimed
    assert "SnapshotHeartbeat" in _events(runtime, sid)


def test_worker_processes_with_schedulers_make_one_snapshot_per_slot(make_config, tmp_path, runtime):
    """Two processes, each a scheduler and a worker, for a while: one snapshot per slot."""
    make_config(extra="[worker]\nlease_seconds = 5\nscheduler_interval = 0.2\n")  # rewrites the file
    pool = WorkerProcesses(str(tmp_path / "snapledger.toml"), tmp_path)
    pid = runtime.app.create_policy(
        {"name": "often", "source": "demo", "storage": "local", "schedule": "* * * * * */2"}, "t"
    ).id
    try:
        pool.start()
        pool.start()
        time.sleep(9)
        runtime.app.stop_policy(pid, "t")
        policy = runtime.app.get_policy(pid)
        wait_until(
            lambda: all(
                runtime.app.get_snapshot(s).status in ("completed", "stopped") for s in policy.snapshot_ids
            ),
            what="the scheduled runs",
        )
    finally:
        pool.close()
    taken = [e for e in runtime.app.repository.event_store.get(pid) if type(e).__name__ == "SnapshotTaken"]
    slots = [e.slot for e in taken]
    assert len(slots) >= 3 and len(set(slots)) == len(slots), slots
    assert all((b - a).total_seconds() % 2 == 0 for a, b in zip(slots, slots[1:], strict=False))
    for sid in policy.snapshot_ids:
        assert Counter(_events(runtime, sid))["SnapshotStarted"] <= 1
    assert_views_equal_rebuild(runtime)


def test_a_lost_append_abandons_the_run_which_is_claimed_again(runtime):
    """An append that fails without an answer (database away) loses its events while the
    aggregate's version moves on. The worker must neither fail the run nor append again
    (that would leave a gap no replay survives): it abandons the run, and once the lease
    lapses the run is claimed again and completes, with a stream that replays."""
    from eventsourcing.persistence import OperationalError

    from service.worker import Worker

    pid = runtime.app.create_policy({"name": "flaky", "source": "big", "storage": "local"}, "t").id
    sid = runtime.app.request_snapshot(pid, "t").id
    record = runtime.app.record
    calls = {"n": 0}

    def flaky_record(*aggregates):
        if any(getattr(a, "id", None) == sid for a in aggregates):
            calls["n"] += 1
            if calls["n"] == 3:  # the claim and a progress event went through; this one is lost
                aggregates[0].collect_events()
                raise OperationalError("couldn't get a connection after 3.00 sec")
        return record(*aggregates)

    runtime.app.record = flaky_record
    runtime.runner.start()
    try:
        worker = Worker(runtime.app, runtime.resources, runtime.find_work, "w", lease_seconds=LEASE).start()
        snap = wait_until(
            lambda: (s := runtime.app.get_snapshot(sid)).status in ("completed", "failed") and s,
            what="the run to end",
        )
        worker.stop()
    finally:
        runtime.runner.stop()
    assert snap.status == "completed" and snap.attempt == 2, (snap.status, getattr(snap, "reason", None))
    kinds = _events(runtime, sid)  # replays without a version gap
    assert "SnapshotFailed" not in kinds and kinds.count("SnapshotStarted") == 2


def test_a_worker_claims_the_next_task_as_soon_as_a_run_ends(runtime):
    """Queued work is not left waiting for the next poll: a run's end frees the slot and
    wakes the claim loop (with a 0.2 s poll, one worker used to finish at most 5 runs/s)."""
    from service.worker import Worker

    pid = runtime.app.create_policy({"name": "quick", "source": "secured", "storage": "local"}, "t").id
    ids = [runtime.app.request_snapshot(pid, "t").id for _ in range(3)]
    runtime.runner.catch_up()  # the queue shows all three at the first claim
    runtime.runner.start()
    worker = Worker(runtime.app, runtime.resources, runtime.find_work, "w", poll_interval=30.0)
    try:
        start = time.monotonic()
        worker.start()
        wait_until(
            lambda: all(runtime.app.get_snapshot(i).status == "completed" for i in ids),
            timeout=70,  # without the wake-up: about 60 s, two polls
            what="three runs",
        )
        elapsed = time.monotonic() - start
    finally:
        worker.stop()
        runtime.runner.stop()
    assert elapsed < 15, f"{elapsed:.1f} s: the worker waited for its 30 s poll between runs"


def test_of_standby_runners_one_applies_events_and_another_takes_over(runtime, pg_config):
    """Worker processes' runners stand by: one holds the views' lead and applies every
    batch; when it goes, another takes the lead and the views keep up."""
    from projections.db import PostgresViews
    from projections.runner import STANDBY_POLL, ProjectionRunner

    db = pg_config.database
    dbs = [PostgresViews(db.conninfo(), db.schema) for _ in range(2)]
    runners = [ProjectionRunner(runtime.app, views) for views in dbs]
    batches = [0, 0]
    for k, r in enumerate(runners):
        r.on_advance.append(lambda k=k: batches.__setitem__(k, batches[k] + 1))
    try:
        for r in runners:
            r.start(standby=True)
        pid = runtime.app.create_policy({"name": "lead", "source": "secured", "storage": "local"}, "t").id
        for _ in range(5):
            runtime.app.request_snapshot(pid, "t")
            time.sleep(0.1)
        head = runtime.app.recorder.max_notification_id()
        wait_until(lambda: runners[0].position() >= head, timeout=STANDBY_POLL * 5, what="views")
        leader = 0 if batches[0] else 1
        assert batches[leader] > 0 and batches[1 - leader] == 0, batches

        runners[leader].stop()
        dbs[leader].close()  # its process exits: the lock goes with its session
        runtime.app.request_snapshot(pid, "t")
        head = runtime.app.recorder.max_notification_id()
        other = runners[1 - leader]
        wait_until(lambda: other.position() >= head, timeout=STANDBY_POLL * 5, what="take-over")
        assert batches[1 - leader] > 0
    finally:
        for r, views in zip(runners, dbs, strict=True):
            r.stop()
            views.close()


def test_a_frozen_leader_loses_the_views_lead(pg_config):
    """A process that stops checking in (frozen, swapping) loses the lead to the server's
    idle-session timeout; it learns so at its next check and stands by."""
    from projections.db import LEAD_TIMEOUT, PostgresViews

    db = pg_config.database
    one, two = (PostgresViews(db.conninfo(), db.schema) for _ in range(2))
    try:
        assert one.lead("projections") and not two.lead("projections")
        assert one.lead("projections")  # a leader's repeated check is cheap and true
        wait_until(lambda: two.lead("projections"), timeout=LEAD_TIMEOUT * 3, what="take-over")
        assert not one.lead("projections") and not one.lead("projections")
    finally:
        one.close()
        two.close()


def test_a_runner_frozen_inside_a_batch_holds_the_tracking_rows_for_seconds_only(pg_config, monkeypatch):
    """A lead runner SIGSTOP'd while it holds view_tracking FOR UPDATE sat idle in its
    transaction until it woke; the server now ends that transaction after IDLE_TX_MS."""
    import threading
    import time as clock

    from projections import db as views_db
    from projections.db import PostgresViews

    monkeypatch.setattr(views_db, "IDLE_TX_MS", 1500)
    db = pg_config.database
    runtime = Runtime.build(pg_config)  # creates the views' tables
    runtime.views.close()
    runtime.app.close()
    frozen, other = (PostgresViews(db.conninfo(), db.schema) for _ in range(2))
    try:
        holder = frozen.pool.getconn()
        holder.execute("SELECT * FROM view_tracking FOR UPDATE")  # and then nothing: frozen
        started = clock.monotonic()
        done = threading.Event()

        def take() -> None:
            with other.pool.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '30s'")
                conn.execute("SELECT * FROM view_tracking FOR UPDATE")
            done.set()

        threading.Thread(target=take, daemon=True).start()
        assert done.wait(20), "the frozen runner's lock outlived the idle-transaction timeout"
        assert clock.monotonic() - started >= 1.0  # it did wait for the holder, for a while
    finally:
        frozen.close()
        other.close()
