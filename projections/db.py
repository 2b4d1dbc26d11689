"""One small SQL seam for the views: the same statements run on SQLite and PostgreSQL.

Statements use psycopg's named placeholders (%(name)s); SQLite gets them rewritten to
:name. Timestamps are ISO-8601 UTC text in both, so rows compare equal across engines.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

LEAD_TIMEOUT = 5  # seconds without a check after which a process loses the lead

log = logging.getLogger("snapledger.projections")

_NAMED = re.compile(r"%\((\w+)\)s")


class Cursor(Protocol):
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any: ...
    def executemany(self, sql: str, params: Iterable[Mapping[str, Any]]) -> Any: ...
    def fetchone(self) -> dict[str, Any] | None: ...
    def fetchall(self) -> list[dict[str, Any]]: ...
    @property
    def rowcount(self) -> int: ...


class ViewDatabase(ABC):
    dialect: str

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """Commits on success, rolls back on any exception."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.transaction() as cur:
            cur.execute(sql, params or {})
            return cur.fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[tuple[Cursor, Callable[[], None]]]:
        """A transaction whose reads share one snapshot and that takes the write lock only
        when `lock()` is called (then its reads see the latest commits); commits on success.
        Where the engine locks rows, not the database, it is one plain transaction."""
        with self.transaction() as cur:
            yield cur, lambda: None

    def lead(self, name: str) -> bool:
        """Whether this process holds the named lead among processes sharing the views.
        One process at a time needs to apply events; where the views are a local file,
        this process is the only one that matters."""
        return True

    @abstractmethod
    def close(self) -> None: ...


@functools.lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """The views' statements are few and fixed: rewrite each placeholder style once."""
    return _NAMED.sub(r":\1", sql)


class _SQLiteCursor:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._cur.execute(_sqlite_sql(sql), params or {})

    def executemany(self, sql: str, params: Iterable[Mapping[str, Any]]) -> Any:
        return self._cur.executemany(_sqlite_sql(sql), params)

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cur.fetchone()
        return dict(row) if row is not None else None

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cur.fetchall()]

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class SQLiteViews(ViewDatabase):
    """A connection per thread; WAL lets the API read while the runner writes."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache per connection: with 2 MiB (the default) a view of a
            # few hundred thousand records re-reads its index pages on every update.
            conn.execute("PRAGMA cache_size=-65536")
            # Checkpoint every 64 MiB of WAL, not 4 MiB: a replay rewrites the same pages
            # batch after batch, and each checkpoint copies them back and syncs (measured
            # 31 -> 35k events/s on a 1M-event rebuild). The views are disposable.
            conn.execute("PRAGMA wal_autocheckpoint=16384")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A read is one statement in autocommit mode: WAL gives it a consistent snapshot
        without the write lock, so API reads neither queue behind one another nor behind
        the projection runner (BEGIN IMMEDIATE here made every read wait for the lock)."""
        cur = _SQLiteCursor(self._connection().cursor())
        cur.execute(sql, params or {})
        return cur.fetchall()

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteCursor(conn.cursor())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[tuple[Cursor, Callable[[], None]]]:
        """SQLite has one write lock for the whole file: a runner that held it while its
        handlers ran would make every other view writer (a parallel rebuild) wait out the
        whole batch. Reads run in a deferred transaction (one WAL snapshot, no lock);
        `lock()` ends it and begins an IMMEDIATE one for the writes."""
        conn = self._connection()
        conn.execute("BEGIN")

        def lock() -> None:
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")

        try:
            yield _SQLiteCursor(conn.cursor()), lock
        except BaseException:
            if conn.in_transaction:  # not if BEGIN IMMEDIATE itself failed (busy)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


IDLE_TX_MS = 20_000  # above the longest batch (20,000 events in a rebuild: ~1 s), far below a freeze


class PostgresViews(ViewDatabase):
    dialect = "postgresql"

    def __init__(self, conninfo: str, schema: str) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.schema = schema
        self._conninfo = conninfo
        self._leads: dict[str, Any] = {}  # name -> the connection that holds or asks for that lock
        self._holding: set[str] = set()
        self._checked: dict[str, float] = {}
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=8,
            # A runner frozen inside a batch (SIGSTOP, a stuck host) holds the tracking rows
            # FOR UPDATE: the server ends such a transaction after 20 idle seconds, so the
            # other runners wait seconds, not until the frozen one wakes.
            kwargs={
                "row_factory": dict_row,
                "options": f"-c search_path={schema} -c idle_in_transaction_session_timeout={IDLE_TX_MS}",
            },
            check=ConnectionPool.check_connection,  # a restarted server leaves dead connections
            timeout=3,  # while the database is down, answer 503 soon instead of hanging
            open=True,
        )

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur  # type: ignore[misc]

    def lead(self, name: str) -> bool:
        """A session advisory lock on a connection of its own: held until this process
        exits or loses the connection, whereupon another process's next call takes it."""
        import psycopg

        now = time.monotonic()
        if name in self._holding and now - self._checked.get(name, 0.0) < LEAD_TIMEOUT / 5:
            return True  # held, and its connection answered within the last second
        conn = self._leads.get(name)
        try:
            if conn is None or conn.closed:
                self._holding.discard(name)
                conn = self._leads[name] = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=3)
                try:
                    # A frozen holder (stopped, swapping) must not keep the lead: a session
                    # idle this long is ended by the server, which frees the lock.
                    conn.execute(f"SET idle_session_timeout = '{LEAD_TIMEOUT}s'")
                except psycopg.Error:  # before PostgreSQL 14: only an exit frees the lead
                    log.warning("idle_session_timeout unsupported: a frozen process keeps the views' lead")
            if name in self._holding:
                conn.execute("SELECT 1")  # still connected, so still holding it
            else:
                key = f"snapledger:{self.schema}:{name}"
                row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
                if not (row and row[0]):
                    return False  # another process leads; this connection waits for the next try
                self._holding.add(name)
        except psycopg.Error:
            self._holding.discard(name)
            self._leads.pop(name, None)
            if conn is not None:
                conn.close()  # whatever it held goes with the session
            return False
        self._checked[name] = now
        return True

    def close(self) -> None:
        for conn in self._leads.values():
            conn.close()
        self._leads.clear()
        self._holding.clear()
        self.pool.close()
