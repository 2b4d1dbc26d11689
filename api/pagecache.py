"""Rendered list pages, reused while the record views have not moved.

A page depends only on view rows, and view rows change only together with the views'
tracking positions (one transaction), whichever process applied the events. So the
positions are the page's version: read them first, then the rows; a page cached under
positions P holds rows at P or newer, never older.

Reading the positions costs a hop to a worker thread, which under load cost more than
the page itself. So `page` (on the event loop) trusts a version whose read began at most
`fresh_for` before the request arrived, and requests arriving together share one read
instead of each queueing for a thread. This process's projection runner forgets the
version the moment it applies anything (`views_moved`), so within this process a read never
misses a write it has seen acknowledged; a write applied by another process shows at most
`fresh_for` later (10 ms by default) than it would without the cache.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import anyio.to_thread
from starlette.concurrency import run_in_threadpool

from projections.db import ViewDatabase

Version = tuple[tuple[str, int], ...]


def _retrieve(future: asyncio.Future[Version]) -> None:
    if not future.cancelled():
        future.exception()


class PageCache:
    def __init__(self, views: ViewDatabase, size: int = 256, fresh_for: float = 0.01) -> None:
        self.views = views
        self.size = size
        self.fresh_for = fresh_for
        self.inline = views.dialect == "sqlite"
        self._pages: OrderedDict[Hashable, tuple[Version, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._seen: tuple[Version, float] | None = None  # (version, when its read began)
        self._generation = 0  # bumped by views_moved: a read begun before it is not trusted
        self._reading: tuple[asyncio.Future[Version], float, int] | None = None  # the loop's

    def views_moved(self) -> None:
        """Called by the local projection runner after each applied batch."""
        with self._lock:
            self._generation += 1
            self._seen = None

    def _version(self) -> Version:
        began = time.monotonic()
        with self._lock:
            generation = self._generation
        rows = self.views.query("SELECT view, position FROM view_tracking")
        version = tuple(sorted((r["view"], int(r["position"])) for r in rows))
        with self._lock:
            if generation == self._generation and (self._seen is None or self._seen[1] < began):
                self._seen = (version, began)
        return version

    async def page(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The page at a version read no earlier than `fresh_for` before this call.

        On SQLite the version is read right here: a WAL read of a row per view takes about
        0.1 ms and never waits for a writer, less than the hop to a thread. Elsewhere a
        version past half its freshness is read again in the background while it still
        serves, so under steady traffic requests seldom wait for a read."""
        now = time.monotonic()
        not_before = now - self.fresh_for
        body = self.peek(key, not_before)
        if body is not None:
            if not self.inline and self._seen_began() < now - self.fresh_for / 2:
                self._read(now - self.fresh_for / 2)
            return body
        version = self._version() if self.inline else await asyncio.shield(self._read(not_before))
        body = self.peek(key, not_before)
        if body is not None:
            return body
        work = functools.partial(self._at, version, key, render)  # rows at `version` or newer
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)  # an outage answers at once

    def _seen_began(self) -> float:
        seen = self._seen
        return seen[1] if seen is not None else float("-inf")

    def _read(self, not_before: float) -> asyncio.Future[Version]:
        """The version read begun at or after `not_before`, starting one if none is."""
        reading = self._reading
        if reading is None or reading[1] < not_before or reading[2] != self._generation:
            future = asyncio.ensure_future(run_in_threadpool(self._version))
            future.add_done_callback(_retrieve)  # a failed background read is not an error here
            reading = self._reading = (future, time.monotonic(), self._generation)
        return reading[0]

    def peek(self, key: Hashable, not_before: float) -> bytes | None:
        """The page if it was rendered at the version whose read began at or after
        `not_before` (a monotonic time); no I/O."""
        with self._lock:
            seen = self._seen
            if seen is None or seen[1] < not_before:
                return None
            hit = self._pages.get(key)
            if hit is None or hit[0] != seen[0]:
                return None
            self._pages.move_to_end(key)
            return hit[1]

    def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        return self._at(self._version(), key, render)

    def _at(self, version: Version, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The page cached under `version`, or rendered now (after `version` was read)."""
        with self._lock:
            hit = self._pages.get(key)
            if hit is not None and hit[0] == version:
                self._pages.move_to_end(key)
                return hit[1]
        body = render()
        with self._lock:
            self._pages[key] = (version, body)
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return body
