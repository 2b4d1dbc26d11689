"""Whether the database answers, known at all times, so that requests during an outage are
answered at once (503 with Retry-After) instead of waiting out connection timeouts.

A probe opens a fresh connection every quarter second: the pools' connections may be dead
or stalled, a new one tells the truth. The database counts as down when a probe fails, or
when none has succeeded for STALE_SECONDS (a stalled server never fails, it only keeps
quiet). On the way back, `on_recovery` callbacks let the pools drop their dead
connections at once instead of at the end of their reconnect backoff.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import psycopg
import psycopg_pool
from eventsourcing import persistence as es_persistence

log = logging.getLogger("snapledger.availability")
T = TypeVar("T")
PROBE_SECONDS = 0.25
GUARD_SECONDS = 0.1  # how often a waiting request looks at the watch
STALE_SECONDS = 1.25  # above a probe's round trip on a loaded host, below the 2 s answer bound


class DatabaseUnavailable(Exception):
    """The event store's database does not answer: the request is not attempted."""


UNAVAILABLE: tuple[type[Exception], ...] = (  # the database, not the request, is at fault
    DatabaseUnavailable,
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    es_persistence.ConnectionUnavailableError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
)


class DatabaseWatch:
    def __init__(self, conninfo: str | None) -> None:
        self.conninfo = conninfo
        self.on_recovery: list[Callable[[], None]] = []
        self._last_ok = time.monotonic()
        self._failure = ""  # why the last probe failed; empty after a success
        self._was_up = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DatabaseWatch:
        if self.conninfo is not None and self._thread is None:
            self._last_ok = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="database-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def watching(self) -> bool:
        return self._thread is not None

    @property
    def up(self) -> bool:
        if self._thread is None:
            return True  # not watching (SQLite, or not started): every call is attempted
        return not self._failure and time.monotonic() - self._last_ok < STALE_SECONDS

    @property
    def reason(self) -> str:
        if self._failure:
            return self._failure
        return f"no answer for {time.monotonic() - self._last_ok:.1f} s"

    def require(self) -> None:
        if not self.up:
            raise DatabaseUnavailable(f"the database does not answer ({self.reason})")

    def probe(self) -> str:
        """'' when a fresh connection answers, else why not."""
        assert self.conninfo is not None
        try:
            with psycopg.connect(self.conninfo, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return ""
        except Exception as e:  # noqa: BLE001 - any failure means: not answering
            return (str(e).strip().splitlines() or [type(e).__name__])[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            failure = self.probe()
            if failure:
                self._failure = failure
            else:
                self._failure, self._last_ok = "", time.monotonic()
            up = self.up
            if up != self._was_up:
                self._was_up = up
                if up:
                    log.warning("database answers again")
                    for callback in self.on_recovery:
                        try:
                            callback()
                        except Exception:  # noqa: BLE001 - a pool that cannot reset retries on its own
                            log.exception("reset after the outage failed")
                else:
                    log.warning("database does not answer: %s", self.reason)
            self._stop.wait(PROBE_SECONDS)


async def attempt(watch: DatabaseWatch | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs blocking work off the event loop, unless the database does not answer (see
    `guarded`)."""
    work = functools.partial(fn, *args, **kwargs)
    return await guarded(watch, lambda: anyio.to_thread.run_sync(work, abandon_on_cancel=True))


async def guarded(watch: DatabaseWatch | None, run: Callable[[], Awaitable[T]]) -> T:
    """`run()`, unless the database does not answer: then it is not attempted, and work
    already waiting when the outage is found is not waited for (its thread goes on until
    its own connection gives up; a mutation it completes is recorded under its request
    key, so the client's retry answers it)."""
    if watch is None or not watch.watching:
        return await run()
    watch.require()
    result: dict[str, Any] = {}

    async with anyio.create_task_group() as group:

        async def work() -> None:
            try:
                result["value"] = await run()
            except Exception as e:  # noqa: BLE001 - raised to the caller below
                result["error"] = e
            group.cancel_scope.cancel()

        async def guard() -> None:
            while watch.up:
                await anyio.sleep(GUARD_SECONDS)
            group.cancel_scope.cancel()

        group.start_soon(work)
        group.start_soon(guard)
    if "error" in result:
        raise result["error"]
    if "value" in result:
        return result["value"]  # type: ignore[no-any-return]
    watch.require()
    raise DatabaseUnavailable("the database stopped answering")


def steady_reconnects() -> None:
    """psycopg_pool retries a lost connection after 1, 2, 4, 8 ... s: after an outage of N s
    a pool could wait about N s more before its next try. The pools offer no "retry now",
    so retries go every half second instead (one connection attempt per lost slot per half
    second while the database is away: nothing a server notices)."""
    from psycopg_pool.base import AttemptWithBackoff

    AttemptWithBackoff.INITIAL_DELAY = 0.5
    AttemptWithBackoff.DELAY_BACKOFF = 1.0
