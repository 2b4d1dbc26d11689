"""The list-page cache never serves a page older than what this process has applied, and
a page moved by another process shows within the cache's freshness window."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.pagecache import PageCache
from projections.db import SQLiteViews


def views_at(tmp_path, position: int) -> SQLiteViews:
    views = SQLiteViews(tmp_path / "views.db")
    with views.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS view_tracking (view TEXT PRIMARY KEY, position BIGINT)")
        cur.execute("DELETE FROM view_tracking")
        cur.execute("INSERT INTO view_tracking VALUES ('backup_records', %(p)s)", {"p": position})
    return views


def recent(cache: PageCache) -> float:
    return time.monotonic() - cache.fresh_for


def test_peek_serves_only_a_page_of_a_recently_read_version(tmp_path):
    views = views_at(tmp_path, 1)
    cache = PageCache(views, fresh_for=0.2)
    assert cache.peek("k", recent(cache)) is None, "nothing read yet"
    assert cache.get("k", lambda: b"one") == b"one"
    assert cache.peek("k", recent(cache)) == b"one"
    assert cache.peek("other", recent(cache)) is None
    time.sleep(0.25)
    assert cache.peek("k", recent(cache)) is None, "a version older than fresh_for is read again"
    assert cache.get("k", lambda: b"never rendered") == b"one", "same version: the page is reused"


@pytest.mark.parametrize("inline", [True, False], ids=["read-on-loop", "read-in-thread"])
def test_concurrent_requests_share_one_version_read(tmp_path, inline):
    """On the loop (SQLite) or through one shared thread hop (PostgreSQL's way)."""
    views = views_at(tmp_path, 1)
    cache = PageCache(views, fresh_for=60)
    cache.inline = inline
    reads, query = [], views.query
    views.query = lambda sql, params=None: reads.append(sql) or query(sql, params)  # type: ignore[method-assign]

    async def burst() -> list[bytes]:
        await cache.page("k", lambda: b"one")
        reads.clear()
        cache.views_moved()  # the version must be read again, once for all of them
        return await asyncio.gather(*(cache.page("k", lambda: b"one") for _ in range(20)))

    assert asyncio.run(burst()) == [b"one"] * 20
    assert len(reads) == 1


def test_a_version_past_half_its_freshness_is_read_again_in_the_background(tmp_path):
    views = views_at(tmp_path, 1)
    cache = PageCache(views, fresh_for=0.2)
    cache.inline = False

    async def scenario() -> tuple[bytes, bytes]:
        await cache.page("k", lambda: b"one")
        views_at(tmp_path, 2)  # another process moves the views
        await asyncio.sleep(0.12)
        served = await cache.page("k", lambda: b"two")  # still fresh: served, and a read begins
        await asyncio.sleep(0.05)
        assert cache._seen is not None and cache._seen[0] == (("backup_records", 2),)
        return served, await cache.page("k", lambda: b"two")

    assert asyncio.run(scenario()) == (b"one", b"two")


def test_a_local_batch_forgets_the_version_at_once(tmp_path):
    views = views_at(tmp_path, 1)
    cache = PageCache(views, fresh_for=60)
    cache.get("k", lambda: b"one")
    views_at(tmp_path, 2)
    assert cache.peek("k", recent(cache)) == b"one", "moved by another process: trusted for fresh_for"
    cache.views_moved()
    assert cache.peek("k", recent(cache)) is None
    assert cache.get("k", lambda: b"two") == b"two"
    assert cache.peek("k", recent(cache)) == b"two"


def test_a_version_read_racing_a_local_batch_is_not_trusted(tmp_path):
    views = views_at(tmp_path, 1)
    cache = PageCache(views, fresh_for=60)
    query = views.query

    def slow_query(sql, params=None):
        rows = query(sql, params)  # read at position 1 ...
        cache.views_moved()  # ... and the runner commits position 2 before it is recorded
        return rows

    views.query = slow_query  # type: ignore[method-assign]
    cache.get("k", lambda: b"one")
    assert cache.peek("k", recent(cache)) is None, "the read began before the batch: its version may be stale"


def test_pages_through_http_follow_a_runner_in_another_process(client, tmp_path):
    """A second runtime on the same stores stands for another process (a worker): what it
    writes and projects shows in this API's cached page within fresh_for."""
    from api.runtime import Runtime
    from tests.support.api import create_policy

    runtime = client.app.state.runtime
    pid = create_policy(client)
    assert client.get("/api/v1/backups?limit=5").json()["items"] == []
    other = Runtime.build(runtime.config)
    try:
        outcome = other.app.request_snapshot(pid, "other-process")
        other.runner.catch_up()
    finally:
        other.close()
    time.sleep(runtime.pages.fresh_for * 2)
    items = client.get("/api/v1/backups?limit=5").json()["items"]
    assert [r["id"] for r in items] == [str(outcome.id)]
