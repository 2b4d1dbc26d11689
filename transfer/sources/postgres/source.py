"""PostgreSQL as a source.

One REPEATABLE READ, READ ONLY transaction exports its snapshot; `pg_dump --schema-only
--snapshot` (the reference for what a schema is) and every table's `COPY ... TO STDOUT`
run in that one snapshot, so schema and rows are the same point in time. The archive holds
the schema dump, what a restore needs besides it (sequence values, populated materialized
views, which table each index or constraint belongs to, object identities, roles), two
psql scripts for restoring by hand, and one COPY member per table.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql

from transfer.archive.format import member_name
from transfer.errors import SourceError
from transfer.ports import PointInTime
from transfer.sources.postgres import catalog as pg_catalog
from transfer.sources.postgres.connection import CHUNK, connect, conninfo, scalar
from transfer.sources.postgres.members import (
    LOAD_SCRIPT,
    REFRESH_SCRIPT,
    SCHEMA_DUMP,
    STATE,
    STATE_FORMAT,
    check_readable,
)
from transfer.sources.postgres.toc import SchemaDump, read_dump
from transfer.sources.postgres.tools import (
    ToolError,
    require_pg_dump,
    run_pg_dump,
)

F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe lets psql run ahead while we compress


class PostgresBackupSession:
    parallel_safe: bool  # set per session: with psql each table has its own connection
    isolated_collections = False  # one snapshot, one transaction: a failed COPY ends the run
    has_schema = True  # pg_dump's schema dump and the restore state, in schema_members()

    def __init__(self, source: PostgresSource, conn: psycopg.Connection) -> None:
        self.source = source
        self.conn = conn
        self.version = conn.info.server_version
        try:
            self.pg_dump, self.pg_dump_version = require_pg_dump(self.version)
        except ToolError as e:
            raise SourceError(f"source {source.name!r}: {e}") from None
        self.snapshot = scalar(conn.execute("SELECT pg_export_snapshot()"))
        self.encoding = scalar(conn.execute("SHOW server_encoding"))
        rows = conn.execute(
            """SELECT c.oid, n.nspname, c.relname, pg_relation_size(c.oid), c.relkind
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype = 'e')
               ORDER BY n.nspname, c.relname""",
            (source.schemas,),
        ).fetchall()
        self.tables = {f"{s}.{t}": (oid, s, t, size) for oid, s, t, size, kind in rows if kind == "r"}
        self.partitioned = {oid for oid, _, _, _, kind in rows if kind == "p"}
        if rows:
            # As pg_dump does: nothing can drop or alter a table while the snapshot is read.
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{source.lock_wait_seconds}s"))
            )
            try:
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                        sql.SQL(", ").join(sql.Identifier(s, t) for _, s, t, _, _ in rows)
                    )
                )
            except psycopg.errors.LockNotAvailable:
                raise SourceError(
                    f"source {source.name!r}: a table stayed locked for {source.lock_wait_seconds} s "
                    "(an ALTER or VACUUM FULL holds it); nothing was read"
                ) from None
            conn.execute("SET LOCAL lock_timeout = 0")
        self.psql = shutil.which("psql") if source.use_psql else None
        self.parallel_safe = self.psql is not None  # in-process COPY shares one connection

    def estimates(self) -> dict[str, int]:
        return {name: max(size, 1) for name, (_, _, _, size) in self.tables.items()}

    def definition(self, collection: str) -> None:
        return None  # the schema is one database-wide dump, in schema_members()

    def point_in_time(self) -> PointInTime:
        return PointInTime(True, "one exported snapshot: pg_dump and every COPY read one transaction")

    def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
        extensions = pg_catalog.extensions(self.conn, self.source.schemas)
        try:
            data = run_pg_dump(
                self.pg_dump,
                conninfo(self.source.url, None),
                self.source.password,
                self.snapshot,
                self.source.schemas,
                extensions,
                self.source.lock_wait_seconds,
            )
        except ToolError as e:
            raise SourceError(f"source {self.source.name!r}: {e}") from None
        dump = read_dump(data)
        check_readable(dump, data)
        toc_tables = dump.tables()
        tables: dict[str, dict[str, Any]] = {}
        for name in names:
            oid, schema, table, size = self.tables[name]
            entry = toc_tables.get((schema, table))
            if entry is None or entry.catalog[1] != oid:
                raise SourceError(f"pg_dump's schema of {self.source.name!r} has no table {name!r}")
            tables[name] = {"dump_id": entry.dump_id, "schema": schema, "name": table, "bytes": size}
        state = {
            "format": STATE_FORMAT,
            "server_version_num": self.version,
            "pg_dump_version": self.pg_dump_version,
            "encoding": self.encoding,
            "schemas": self.source.schemas,
            "extensions": extensions,
            "tables": tables,
            "partitioned": sorted(e.dump_id for e in toc_tables.values() if e.catalog[1] in self.partitioned),
            "anchors": {str(k): v for k, v in pg_catalog.anchors(self.conn, dump).items()},
            "objects": {str(k): v for k, v in pg_catalog.identities(self.conn, dump).items()},
            "sequences": {str(k): v for k, v in pg_catalog.sequence_values(self.conn, dump).items()},
            "populated_matviews": pg_catalog.populated_matviews(self.conn, dump),
            "roles": pg_catalog.roles(self.conn, dump, self.source.schemas),
        }
        return [
            (SCHEMA_DUMP, data),
            (STATE, json.dumps(state, indent=1, sort_keys=True).encode()),
            (LOAD_SCRIPT, self._load_script(dump, state, codec).encode()),
            (REFRESH_SCRIPT, self._refresh_script(dump, state).encode()),
        ]

    def _load_script(self, dump: SchemaDump, state: dict[str, Any], codec: str) -> str:
        """For restoring by hand with psql, between pg_restore's pre-data and post-data."""
        unpack = "gunzip -c" if codec == "gzip" else "zstd -dc"
        lines = [
            "-- Rows of every table, then sequence values. Run from the unpacked archive's directory:",
            "--   psql -X -v ON_ERROR_STOP=1 -d TARGET -f schema/load.psql",
            "\\set ON_ERROR_STOP 1",
            f"SET client_encoding = {sql.Literal(self.encoding).as_string(self.conn)};",
        ]
        for name, table in sorted(state["tables"].items()):
            member = member_name(name, "postgresql", codec)
            target = sql.Identifier(table["schema"], table["name"]).as_string(self.conn)
            lines.append(f"\\copy {target} FROM PROGRAM '{unpack} {member}'")
        for dump_id, (value, called) in sorted(state["sequences"].items()):
            e = dump.by_id[int(dump_id)]
            name = sql.Literal(sql.Identifier(e.namespace, e.tag).as_string(self.conn)).as_string(self.conn)
            lines.append(f"SELECT pg_catalog.setval({name}, {int(value)}, {'true' if called else 'false'});")
        return "\n".join(lines) + "\n"

    def _refresh_script(self, dump: SchemaDump, state: dict[str, Any]) -> str:
        lines = ["-- After pg_restore's post-data: materialized views that held rows in the source."]
        for dump_id in state["populated_matviews"]:
            e = dump.by_id[dump_id]
            lines.append(
                f"REFRESH MATERIALIZED VIEW {sql.Identifier(e.namespace, e.tag).as_string(self.conn)};"
            )
        return "\n".join(lines) + "\n"

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        if self.psql:
            return self._read_with_psql(collection, on_raw_bytes)
        return self._read_in_process(collection, on_raw_bytes)

    def _copy_sql(self, collection: str) -> sql.Composed:
        _, schema, table, _ = self.tables[collection]
        return sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(schema, table))

    def _read_with_psql(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """COPY through psql: rows reach a pipe at C speed and arrive here in 1 MiB reads.
        psql joins this session's snapshot (SET TRANSACTION SNAPSHOT), so every table still
        comes from the same point in time. Rows come in the server's encoding, unconverted,
        and row security is off so that a policy cannot silently hide rows (it errors)."""
        assert self.psql is not None  # read_chunks comes here only when psql was found
        copy = self._copy_sql(collection).as_string(self.conn)
        env = {
            **os.environ,
            "PGPASSWORD": self.source.password or "",
            "PGAPPNAME": "snapledger",
            "PGCLIENTENCODING": self.encoding,
        }
        proc = subprocess.Popen(
            [
                self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(self.source.url, None),
                "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                "-c", f"SET TRANSACTION SNAPSHOT '{self.snapshot}'",
                "-c", "SET row_security = off",
                "-c", copy,
                "-c", "COMMIT",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, CHUNK)
        try:
            while chunk := proc.stdout.read(CHUNK):
                on_raw_bytes(len(chunk))
                yield chunk
            if proc.wait() != 0:
                message = proc.stderr.read().decode(errors="replace").strip().splitlines()
                detail = message[0] if message else f"psql exited with {proc.returncode}"
                if self.source.password:
                    detail = detail.replace(self.source.password, "***")
                raise SourceError(f"COPY of {collection} failed: {detail}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()

    def _read_in_process(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """Without psql: COPY rows arrive one message each; a reader thread gathers them into
        1 MiB chunks at libpq level while the caller compresses the previous chunk."""
        statement = self._copy_sql(collection).as_bytes(self.conn)
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
        abandoned = threading.Event()

        def offer(item: bytes | BaseException | None) -> bool:
            while not abandoned.is_set():
                try:
                    chunks.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                pgconn = self.conn.pgconn
                result = pgconn.exec_(statement)
                if result.status != pq.ExecStatus.COPY_OUT:
                    raise SourceError(f"COPY of {collection} failed: {pgconn.get_error_message()}")
                get = pgconn.get_copy_data
                buffer = bytearray()
                while True:
                    size, data = get(0)
                    if size < 0:
                        break
                    buffer += data
                    if len(buffer) >= CHUNK and not offer(bytes(buffer)):
                        return
                    if len(buffer) >= CHUNK:
                        buffer.clear()
                end = pgconn.get_result()
                if end is None or end.status != pq.ExecStatus.COMMAND_OK:
                    raise SourceError(f"COPY of {collection} failed: {pgconn.get_error_message()}")
                while pgconn.get_result() is not None:
                    pass
                if buffer:
                    offer(bytes(buffer))
                offer(None)
            except BaseException as e:  # handed to the consumer, which re-raises it
                offer(e)

        reader = threading.Thread(target=read, name=f"copy-{collection}", daemon=True)
        reader.start()
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                on_raw_bytes(len(item))
                yield item
        finally:
            abandoned.set()
            reader.join(timeout=5)


class PostgresSource:
    kind = "postgresql"
    parallel = 2

    def __init__(
        self,
        name: str,
        url: str,
        password: str | None,
        schemas: list[str],
        use_psql: bool = True,
        lock_wait_seconds: int = 60,
    ) -> None:
        self.name = name
        self.url = url
        self.password = password
        self.schemas = schemas
        self.use_psql = use_psql
        self.lock_wait_seconds = lock_wait_seconds
        self.snapshot: str | None = None  # an exported snapshot to read in (joined)

    def joined(self, snapshot: str) -> PostgresSource:
        """This source, read in an exported snapshot: a replication slot's, so that the
        snapshot and the slot's stream of changes meet with no gap and no overlap."""
        other = copy.copy(self)
        other.snapshot = snapshot
        return other

    @contextmanager
    def open(self) -> Iterator[PostgresBackupSession]:
        conn = connect(self.name, self.url, self.password, "source")
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                if self.snapshot is not None:
                    try:
                        snapshot = sql.Literal(self.snapshot)
                        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
                    except psycopg.Error as e:
                        raise SourceError(
                            f"source {self.name!r}: cannot read in snapshot {self.snapshot!r}: "
                            f"{str(e).splitlines()[0]}"
                        ) from None
                yield PostgresBackupSession(self, conn)
        finally:
            conn.close()
