"""The domain state machine, including every transition an operator must not be able to make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.application import Snapledger
from domain.errors import Conflict, InvalidTransition, InvalidValue, NotFound
from domain.ledger import Catalog
from domain.snapshot import COMPLETED, DELETED, FAILED, REQUESTED, RUNNING, STOPPED
from domain.values import CollectionSelection, Retention, check_cron


@pytest.fixture
def app() -> Snapledger:
    catalog = Catalog(frozenset({"demo", "crm"}), frozenset({"local", "s3"}), frozenset({"scratch"}))
    return Snapledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}, catalog)


def policy(app: Snapledger, name: str = "nightly") -> str:
    return str(app.create_policy({"name": name, "source": "demo", "storage": "local"}, "alice").id)


def now() -> datetime:
    return datetime.now(UTC)


def test_create_records_actor_and_validates_references(app):
    pid = policy(app)
    p = app.get_policy(pid)
    assert (p.name, p.source, p.storage, p.status) == ("nightly", "demo", "local", "active")
    with pytest.raises(InvalidValue) as e:
        app.create_policy({"name": "x", "source": "nope", "storage": "local"}, "alice")
    assert e.value.field == "source" and "demo" in e.value.message
    with pytest.raises(InvalidValue) as e:
        app.create_policy({"name": "x", "source": "demo", "storage": "ftp"}, "alice")
    assert e.value.field == "storage"
    with pytest.raises(InvalidValue) as e:
        app.create_policy({"name": "bad name!", "source": "demo", "storage": "local"}, "alice")
    assert e.value.field == "name"
    with pytest.raises(InvalidValue) as e:
        app.create_policy({"name": "x", "source": "demo", "storage": "local", "colour": 1}, "alice")
    assert e.value.field == "colour"


def test_names_unique_among_live_policies_case_insensitively(app):
    pid = policy(app, "Nightly")
    with pytest.raises(Conflict) as e:
        policy(app, "nightly")
    assert e.value.field == "name"
    app.record_policy_deleted(pid, True, "alice", set())
    policy(app, "nightly")  # free again once deleted


def test_rename_moves_the_claim(app):
    pid = policy(app, "a")
    app.edit_policy(pid, {"name": "b"}, "bob")
    policy(app, "a")
    with pytest.raises(Conflict):
        policy(app, "b")


def test_edit_records_old_and_new_values_only_for_changes(app):
    pid = policy(app)
    app.edit_policy(pid, {"schedule": "0 3 * * *", "source": "demo"}, "bob")
    events = app.repository.event_store.get(app.get_policy(pid).id)
    edited = [e for e in events if type(e).__name__ == "PolicyEdited"]
    assert len(edited) == 1
    assert edited[0].changes == {"schedule": {"old": None, "new": "0 3 * * *"}}
    assert edited[0].actor == "bob"
    before = app.get_policy(pid).version
    app.edit_policy(pid, {"schedule": "0 3 * * *"}, "bob")  # no change, no event
    assert app.get_policy(pid).version == before


def test_invalid_policy_transitions(app):
    pid = policy(app)
    app.stop_policy(pid, "alice")
    with pytest.raises(InvalidTransition, match="already stopped"):
        app.stop_policy(pid, "alice")
    app.record_policy_deleted(pid, False, "alice", set())
    for command in (
        lambda: app.edit_policy(pid, {"schedule": "@daily"}, "a"),
        lambda: app.stop_policy(pid, "a"),
        lambda: app.request_snapshot(pid, "a"),
        lambda: app.rebuild_policy(pid, "a"),
        lambda: app.record_policy_deleted(pid, False, "a", set()),
    ):
        with pytest.raises(InvalidTransition, match="deleted"):
            command()
    with pytest.raises(NotFound):
        app.get_policy("not-a-uuid")


def test_take_snapshot_reactivates_stopped_policy_and_numbers_runs(app):
    pid = policy(app)
    app.stop_policy(pid, "alice")
    s1 = app.request_snapshot(pid, "alice").id
    assert app.get_policy(pid).status == "active"
    s2 = app.request_snapshot(pid, "alice").id
    assert [app.get_snapshot(s).sequence for s in (s1, s2)] == [1, 2]
    assert app.get_snapshot(s2).sub_name == "nightly#2"


def test_snapshot_lifecycle_and_invalid_transitions(app):
    pid = policy(app)
    snap = app.get_snapshot(app.request_snapshot(pid, "alice").id)
    assert snap.status == REQUESTED
    with pytest.raises(InvalidTransition):
        snap.progress(1, 1, 1.0, None, now())
    with pytest.raises(InvalidTransition):
        snap.complete(1, 1, {}, "x", now())
    snap.start("w1", "ddt-1", 60, now())
    with pytest.raises(InvalidTransition):
        snap.start("w2", "ddt-2", 60, now())
    snap.progress(10, 100, 50.0, "orders", now())
    snap.complete(20, 200, {"orders": {"items": 20}}, "abc", now())
    assert snap.status == COMPLETED and snap.percent == 100.0
    for command in (
        lambda: snap.request_stop("a"),
        lambda: snap.fail("x", now()),
        lambda: snap.progress(1, 1, 1.0, None, now()),
    ):
        with pytest.raises(InvalidTransition):
            command()
    snap.delete("user", True, "alice")
    assert snap.status == DELETED
    with pytest.raises(InvalidTransition, match="already deleted"):
        snap.delete("user", True, "alice")


def test_stop_of_queued_run_is_immediate_and_running_run_acknowledges(app):
    pid = policy(app)
    queued = app.get_snapshot(app.stop_snapshot(app.request_snapshot(pid, "a").id, "a").id)
    assert queued.status == STOPPED
    running = app.get_snapshot(app.request_snapshot(pid, "a").id)
    running.start("w", "t", 60, now())
    app.record(running)
    app.stop_snapshot(running.id, "bob")
    fresh = app.get_snapshot(running.id)
    assert fresh.status == RUNNING and fresh.stop_requested
    with pytest.raises(InvalidTransition, match="already stopping"):
        app.stop_snapshot(running.id, "bob")
    fresh.acknowledge_stop(now())
    assert fresh.status == STOPPED


def test_failed_snapshot_keeps_reason(app):
    snap = app.get_snapshot(app.request_snapshot(policy(app), "a").id)
    snap.start("w", "t", 60, now())
    snap.fail("disk full", now())
    assert snap.status == FAILED and snap.reason == "disk full"


def test_stale_worker_is_fenced_by_version(app):
    """A worker holding an old version cannot append: the stop request got there first."""
    from eventsourcing.persistence import IntegrityError

    snap = app.get_snapshot(app.request_snapshot(policy(app), "a").id)
    snap.start("w", "t", 60, now())
    app.record(snap)
    app.stop_snapshot(snap.id, "bob")
    snap.complete(1, 1, {}, "x", now())
    with pytest.raises(IntegrityError):
        app.record(snap)


def test_restore_requires_completed_snapshot_and_known_target(app):
    pid = policy(app)
    sid = app.request_snapshot(pid, "a").id
    with pytest.raises(InvalidTransition, match="not completed"):
        app.request_restore(sid, "scratch", {}, "a")
    snap = app.get_snapshot(sid)
    snap.start("w", "t", 60, now())
    snap.complete(5, 50, {"orders": {"items": 5}}, "abc", now())
    app.record(snap)
    with pytest.raises(InvalidValue) as e:
        app.request_restore(sid, "prod", {}, "a")
    assert e.value.field == "target"
    with pytest.raises(NotFound) as e:  # a valid name, of nothing this snapshot holds
        app.request_restore(sid, "scratch", {"collections": ["customers"]}, "a")
    assert e.value.field == "collections"
    with pytest.raises(NotFound) as e:
        app.request_restore("8d4c2a47-0000-4000-8000-000000000000", "scratch", {}, "a")
    assert e.value.field == "snapshot_id"
    rid = app.request_restore(sid, "scratch", {"collections": ["orders"]}, "a").id
    restore = app.get_restore(rid)
    assert restore.collections == ["orders"] and restore.policy_id == snap.policy_id
    app.stop_restore(rid, "a")
    with pytest.raises(InvalidTransition):
        app.stop_restore(rid, "a")


def test_delete_policy_requires_archives_removed_unless_kept(app):
    pid = policy(app)
    snap = app.get_snapshot(app.request_snapshot(pid, "a").id)
    snap.start("w", "t", 60, now())
    snap.complete(1, 1, {}, "x", now())
    app.record(snap)
    with pytest.raises(InvalidTransition, match="still stored"):
        app.record_policy_deleted(pid, False, "a", set())
    app.record_policy_deleted(pid, False, "a", {snap.id})
    assert app.get_snapshot(snap.id).status == DELETED


def test_rebuild_stops_runs_and_requests_fresh_snapshot(app):
    pid = policy(app)
    running = app.get_snapshot(app.request_snapshot(pid, "a").id)
    running.start("w", "t", 60, now())
    app.record(running)
    queued = app.request_snapshot(pid, "a").id
    out = app.rebuild_policy(pid, "bob")
    assert app.get_snapshot(running.id).stop_requested
    assert app.get_snapshot(queued).status == STOPPED
    fresh = app.get_snapshot(out.extra["snapshot_id"])
    assert fresh.trigger == "rebuild" and fresh.status == REQUESTED


@pytest.mark.parametrize(
    "text,ok",
    [
        ("0 3 * * *", True),
        ("*/15 * * * 1-5", True),
        ("@daily", True),
        ("61 * * * *", False),
        ("* * *", False),
        ("a b c d e", False),
        ("*/0 * * * *", False),
        ("5-1 * * * *", False),
    ],
)
def test_cron_validation(text, ok):
    if ok:
        assert check_cron(text)
    else:
        with pytest.raises(InvalidValue) as e:
            check_cron(text)
        assert e.value.field == "schedule"


def test_retention_and_collections_parsing():
    assert Retention.parse({"keep_last": 3, "expire_after": "2d"}).expire_after_seconds == 172800
    for bad, field in [
        ({"keep_last": 0}, "retention.keep_last"),
        ({"keep_last": True}, "retention.keep_last"),
        ({"expire_after": "soon"}, "retention.expire_after"),
        ({"forever": 1}, "retention.forever"),
        ("7d", "retention"),
    ]:
        with pytest.raises(InvalidValue) as e:
            Retention.parse(bad)
        assert e.value.field == field
    sel = CollectionSelection.parse({"include": ["a", "b"], "exclude": ["b"]})
    assert sel.selects("a") and not sel.selects("b") and not sel.selects("c")
    with pytest.raises(InvalidValue) as e:
        CollectionSelection.parse({"include": ["../etc"]})
    assert e.value.field == "collections.include"


def test_policy_copies_are_independent_and_cheap():
    """The repository's cache hands out deep copies: a command that fails halfway must not
    leave its changes in the cached policy, however the copy is made."""
    import copy
    from uuid import uuid4

    from domain.policy import BackupPolicy

    policy = BackupPolicy("p", "demo", "local", None, "UTC", {}, {"include": []}, "t")
    for _ in range(3):
        policy.take_snapshot(uuid4(), "manual", "t")
    policy.collect_events()
    clone = copy.deepcopy(policy)
    clone.take_snapshot(uuid4(), "manual", "t")
    clone.collections["include"].append("x")
    assert len(policy.snapshot_ids) == 3 and len(clone.snapshot_ids) == 4
    assert policy.collections == {"include": []} and policy.version == 4
    assert clone.snapshot_ids[:3] == policy.snapshot_ids


def test_the_library_s_own_take_snapshot_is_not_shadowed():
    """eventsourcing's Application.take_snapshot(aggregate_id, ...) makes aggregate
    snapshots; the command that requests a backup run is request_snapshot."""
    from eventsourcing.application import Application

    from domain.application import Snapledger

    assert Snapledger.take_snapshot is Application.take_snapshot
    assert callable(Snapledger.request_snapshot)
