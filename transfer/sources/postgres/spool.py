"""One table's rows on their way into a restore target: spooled to local disk so tables load
in parallel from one sequential archive, or streamed straight into COPY when too big.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
from psycopg import sql

from transfer.errors import TargetError
from transfer.sources.postgres.connection import CHUNK
from transfer.sources.postgres.scheduler import Load, Scheduler

SPOOL_BYTES = 256 << 20  # rows of one table held on local disk while it waits for a connection


class Loading(Protocol):
    """What a spool needs of the restore session it loads for (session.py implements it)."""

    loader: psycopg.Connection | None  # the connection the archive reader streams through
    pool: list[psycopg.Connection]  # the connections that load spooled tables
    scheduler: Scheduler | None
    copied: dict[str, int]  # rows loaded, per collection

    def copy_from(self, conn: psycopg.Connection, table: Any, chunks: Iterator[bytes]) -> None: ...

    def copy_failed(self, table: Any, err: psycopg.Error) -> TargetError: ...


class Spool:
    """One table's rows on their way in. Up to SPOOL_BYTES they go to a temporary file and
    a connection of the pool loads them while the archive reader moves on to the next
    table (so tables load in parallel from one sequential archive); past that the reader
    streams the rest straight into a COPY of its own, so the disk holds at most a few
    spool files whatever the table sizes."""

    def __init__(self, session: Loading, table: Any) -> None:
        self.session = session
        self.table = table
        self.file: Any = tempfile.TemporaryFile(prefix="snapledger-rows-")  # noqa: SIM115 - closed in finish/abort
        self.size = 0
        self.direct = False
        self.copy: Any = None

    def write(self, data: bytes) -> int:
        if not self.direct and self.size + len(data) > SPOOL_BYTES:
            self.go_direct()
        if self.direct:
            try:
                self.copy.write(data)
            except psycopg.Error as err:
                raise self.session.copy_failed(self.table, err) from None
        else:
            self.file.write(data)
            self.size += len(data)
        return len(data)

    def go_direct(self) -> None:
        """Takes a slot, starts a COPY on the reader's own connection, replays the spool."""
        session = self.session
        assert session.scheduler is not None and session.loader is not None
        self.slot = session.scheduler.hold()
        self.slot.__enter__()
        self.cursor = session.loader.cursor()
        self.copying = self.cursor.copy(sql.SQL("COPY {} FROM STDIN").format(self.table.identifier))
        self.direct = True
        self.copy = self.copying.__enter__()
        self.file.seek(0)
        while chunk := self.file.read(CHUNK):
            self.copy.write(chunk)
        self.file.close()
        self.file = None

    def _end_direct(self, error: BaseException | None) -> None:
        """Ends the COPY (with the error, so it does not commit), then frees the slot."""
        self.direct = False
        try:
            if error is None:
                self.copying.__exit__(None, None, None)  # the server checks the last rows here
            else:
                with contextlib.suppress(Exception):
                    self.copying.__exit__(type(error), error, error.__traceback__)
        finally:
            rows = self.cursor.rowcount
            self.cursor.close()
            self.slot.__exit__(None, None, None)
        self.session.copied[self.table.collection] = rows

    def finish(self) -> None:
        session = self.session
        assert session.scheduler is not None and session.loader is not None
        if self.direct:
            try:
                self._end_direct(None)
            except psycopg.Error as err:
                session.loader.rollback()
                raise session.copy_failed(self.table, err) from None
            session.loader.commit()
            session.scheduler.rows_loaded(self.table.dump_id)
            return
        spooled, self.file = self.file, None

        def run(conn: psycopg.Connection) -> None:
            with spooled:
                spooled.seek(0)
                session.copy_from(conn, self.table, iter(lambda: spooled.read(CHUNK), b""))

        try:
            session.scheduler.add_load(
                Load(self.table.dump_id, self.size, run), queue_limit=len(session.pool)
            )
        except BaseException:
            spooled.close()
            raise

    def abort(self, error: BaseException) -> None:
        """The member failed half-way (a damaged archive, a stop): its COPY must not commit."""
        if self.direct:
            with contextlib.suppress(Exception):
                self._end_direct(error)
            with contextlib.suppress(Exception):
                self.session.loader.rollback()  # type: ignore[union-attr]
        if self.file is not None:
            self.file.close()
            self.file = None
