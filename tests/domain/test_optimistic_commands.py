"""Take a Snapshot and Stop run first on this process's cached aggregates, without reading
the store. Two applications on one store stand for two processes: whatever the other one
wrote, the answer and the events must be what fresh reads would have given."""

from __future__ import annotations

import pytest

from api.store import CACHE
from domain.application import Snapledger
from domain.errors import InvalidTransition
from domain.ledger import Catalog
from domain.snapshot import STOPPED

CATALOG = Catalog(frozenset({"demo"}), frozenset({"local"}), frozenset())


@pytest.fixture
def pair(tmp_path):
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path / "events.db"),
        **CACHE,
    }
    one, other = Snapledger(env, CATALOG), Snapledger(env, CATALOG)
    yield one, other
    one.close()
    other.close()


def reads(app: Snapledger) -> list[str]:
    """Counts the store reads of aggregates from here on."""
    seen: list[str] = []
    store = app.repository.event_store
    get = store.get

    def counting(*args, **kwargs):
        seen.append(str(kwargs.get("originator_id", args[0] if args else "")))
        return get(*args, **kwargs)

    store.get = counting  # type: ignore[method-assign]
    return seen


def test_a_warm_cache_takes_and_stops_without_reading_the_store(pair):
    one, _ = pair
    pid = one.create_policy({"name": "p", "source": "demo", "storage": "local"}, "alice").id
    one.stop_snapshot(one.request_snapshot(pid, "alice").id, "alice")  # warms the cache
    seen = reads(one)
    sid = one.request_snapshot(pid, "alice").id
    one.stop_snapshot(sid, "alice")
    assert seen == [], "both commands ran on cached aggregates"
    assert one.get_snapshot(sid).status == STOPPED, "a queued run stops at once"


def test_a_write_by_another_process_is_caught_by_the_version_check(pair):
    one, other = pair
    pid = one.create_policy({"name": "p", "source": "demo", "storage": "local"}, "alice").id
    first = one.request_snapshot(pid, "alice").id  # one's cache: the policy after 1 snapshot
    second = other.request_snapshot(pid, "bob").id  # written behind one's back
    third = one.request_snapshot(pid, "alice").id  # stale attempt conflicts, re-runs fresh
    policy = Snapledger.get_policy(other, pid)
    assert list(policy.snapshot_ids) == [first, second, third]
    assert [other.get_snapshot(s).sequence for s in (first, second, third)] == [1, 2, 3]


def test_a_delete_by_another_process_is_answered_from_fresh_state(pair):
    one, other = pair
    pid = one.create_policy({"name": "p", "source": "demo", "storage": "local"}, "alice").id
    sid = one.request_snapshot(pid, "alice").id
    other.stop_snapshot(sid, "bob")
    other.record_policy_deleted(pid, keep_files=True, actor="bob", removed=set())
    with pytest.raises(InvalidTransition):
        one.request_snapshot(pid, "alice")  # one's cache still says active


def test_an_error_from_a_stale_cache_is_decided_again_on_fresh_reads(pair):
    """A cached aggregate that wrongly refuses (here planted: a policy cached as deleted
    that is live in the store) costs a fresh read, not a wrong answer."""
    one, _ = pair
    pid = one.create_policy({"name": "p", "source": "demo", "storage": "local"}, "alice").id
    one.request_snapshot(pid, "alice")
    cached = one._written.take(pid)
    cached.status = "deleted"  # not an event: only this process's memory is wrong
    one._written.put(pid, cached)
    sid = one.request_snapshot(pid, "alice").id
    assert one.get_snapshot(sid).policy_id == pid
