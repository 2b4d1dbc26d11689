"""PostgreSQL as source and restore target: COPY text streams, never rows in Python.

Backup: every table of the chosen schemas is a collection named `<schema>.<table>`; all
tables are copied inside one REPEATABLE READ, READ ONLY transaction, so the snapshot is
one consistent point in time. Each table's definition (columns, types, NOT NULL,
defaults, identity, primary/unique/check constraints) is stored as plain SQL beside it.
Restore: one transaction for the whole run; missing tables are created, existing ones
are refused, truncated or appended to, and rows are streamed with COPY FROM STDIN.
The item counts are checked inside that transaction, so a mismatch commits nothing.

Not carried yet: foreign keys, indexes other than constraints, sequences owned by
`serial` defaults (such defaults are dropped; identity columns are kept and resynced),
partitioned parents (their partitions back up as plain tables), views and functions.
"""

from __future__ import annotations

import contextlib
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
from urllib.parse import unquote, urlparse

import psycopg
from psycopg import pq, sql

from transfer.ndjson import SourceError, TargetError

HEADER = "-- snapledger-table: "
CHUNK = 1 << 20
F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe lets psql run ahead while we compress


def conninfo(url: str, password: str | None) -> str:
    parsed = urlparse(url)
    return psycopg.conninfo.make_conninfo(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=unquote(parsed.username or "") or None,
        dbname=unquote(parsed.path.lstrip("/")),
        password=password or None,
    )


def _connect(name: str, url: str, password: str | None, what: str) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo(url, password), connect_timeout=10)
    except psycopg.OperationalError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if password:
            first = first.replace(password, "***")
        error = SourceError if what == "source" else TargetError
        raise error(f"{what} {name!r}: cannot connect: {first}") from None


def _table_sql(conn: psycopg.Connection, oid: int, schema: str, table: str) -> bytes:
    columns = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
                  a.attidentity, pg_get_expr(d.adbin, d.adrelid) AS default
           FROM pg_attribute a LEFT JOIN pg_attrdef d
             ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (oid,),
    ).fetchall()
    constraints = conn.execute(
        """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid = %s AND contype IN ('p', 'u', 'c') ORDER BY contype, conname""",
        (oid,),
    ).fetchall()
    parts = []
    identity = []
    for name, type_, notnull, ident, default in columns:
        col = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_))
        if ident in ("a", "d"):
            kind = "ALWAYS" if ident == "a" else "BY DEFAULT"
            col = sql.SQL("{} GENERATED {} AS IDENTITY").format(col, sql.SQL(kind))
            identity.append(name)
        elif default is not None and "nextval(" not in default:
            col = sql.SQL("{} DEFAULT {}").format(col, sql.SQL(default))
        if notnull:
            col = sql.SQL("{} NOT NULL").format(col)
        parts.append(col.as_string(conn))
    meta = {
        "schema": schema,
        "table": table,
        "identity": identity,
        "columns": parts,
        "constraints": [[name, definition] for name, definition in constraints],
    }
    return (HEADER + json.dumps(meta) + "\n" + create_table_sql(conn, meta, schema, table)).encode()


def _constraint(meta: dict[str, Any], name: str, definition: str, renamed: bool) -> sql.Composable:
    """Keeps constraint names when the table keeps its name; a renamed copy gets fresh ones
    (constraint indexes share the schema's namespace with the original's)."""
    if renamed:
        return sql.SQL(definition)
    return sql.SQL("CONSTRAINT {} {}").format(sql.Identifier(name), sql.SQL(definition))


def _is_indexed(definition: str) -> bool:
    return definition.startswith(("PRIMARY KEY", "UNIQUE"))


def create_table_sql(
    conn: psycopg.Connection, meta: dict[str, Any], schema: str, table: str, defer_indexes: bool = False
) -> str:
    """With defer_indexes, primary keys and unique constraints are left for
    index_constraints_sql(): building an index once after COPY beats maintaining it per row."""
    renamed = (schema, table) != (meta["schema"], meta["table"])
    parts = [sql.SQL(c) for c in meta["columns"]]
    for name, definition in meta["constraints"]:
        if not (defer_indexes and _is_indexed(definition)):
            parts.append(_constraint(meta, name, definition, renamed))
    return (
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE {} (\n  {}\n);\n")
        .format(sql.Identifier(schema), sql.Identifier(schema, table), sql.SQL(",\n  ").join(parts))
        .as_string(conn)
    )


def index_constraints_sql(meta: dict[str, Any], schema: str, table: str) -> list[sql.Composable]:
    renamed = (schema, table) != (meta["schema"], meta["table"])
    return [
        sql.SQL("ALTER TABLE {} ADD {}").format(
            sql.Identifier(schema, table), _constraint(meta, name, definition, renamed)
        )
        for name, definition in meta["constraints"]
        if _is_indexed(definition)
    ]


def parse_definition(data: bytes) -> tuple[dict[str, Any], str]:
    first, _, ddl = data.decode().partition("\n")
    if not first.startswith(HEADER):
        raise TargetError("table definition lacks its snapledger header")
    return json.loads(first[len(HEADER) :]), ddl


class _BackupSession:
    def __init__(self, source: PostgresSource, conn: psycopg.Connection) -> None:
        self.source = source
        self.conn = conn
        rows = conn.execute(
            """SELECT c.oid, n.nspname, c.relname, pg_relation_size(c.oid)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname = ANY(%s)
               ORDER BY n.nspname, c.relname""",
            (source.schemas,),
        ).fetchall()
        self.tables = {f"{s}.{t}": (oid, s, t, size) for oid, s, t, size in rows}
        self.psql = shutil.which("psql") if source.use_psql else None
        self.parallel_safe = self.psql is not None  # in-process COPY shares one connection
        self.snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0] if self.psql else None

    def estimates(self) -> dict[str, int]:
        return {name: max(size, 1) for name, (_, _, _, size) in self.tables.items()}

    def definition(self, collection: str) -> bytes:
        oid, schema, table, _ = self.tables[collection]
        return _table_sql(self.conn, oid, schema, table)

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        if self.psql:
            return self._read_with_psql(collection, on_raw_bytes)
        return self._read_in_process(collection, on_raw_bytes)

    def _read_with_psql(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """COPY through psql: rows reach a pipe at C speed and arrive here in 1 MiB reads.
        psql joins this session's snapshot (SET TRANSACTION SNAPSHOT), so every table still
        comes from the same point in time."""
        _, schema, table, _ = self.tables[collection]
        copy = sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(schema, table)).as_string(self.conn)
        env = {**os.environ, "PGPASSWORD": self.source.password or "", "PGAPPNAME": "snapledger"}
        proc = subprocess.Popen(
            [
                self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(self.source.url, None),
                "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                "-c", f"SET TRANSACTION SNAPSHOT '{self.snapshot}'",
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
        _, schema, table, _ = self.tables[collection]
        statement = sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(schema, table)).as_bytes(self.conn)
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
        self, name: str, url: str, password: str | None, schemas: list[str], use_psql: bool = True
    ) -> None:
        self.name = name
        self.url = url
        self.password = password
        self.schemas = schemas
        self.use_psql = use_psql

    @contextmanager
    def open(self) -> Iterator[_BackupSession]:
        conn = _connect(self.name, self.url, self.password, "source")
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                yield _BackupSession(self, conn)
        finally:
            conn.close()


class _RestoreSession:
    def __init__(self, target: PostgresTarget, conn: psycopg.Connection, existing: str) -> None:
        self.target = target
        self.conn = conn
        self.existing = existing
        self.deferred: list[sql.Composable] = []
        self.tables: dict[str, tuple[sql.Composable, list[str], int]] = {}

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        """as_name: `table` (same schema) or `schema.table` to restore under another name."""
        if definition is None:
            raise TargetError(f"collection {collection!r} has no table definition in the archive")
        meta, _ = parse_definition(definition)
        schema, table = meta["schema"], meta["table"]
        if as_name:
            schema, _, rest = as_name.partition(".") if "." in as_name else (schema, "", as_name)
            table = rest or as_name
        qualified = sql.Identifier(schema, table)
        exists = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (qualified.as_string(self.conn),)
        ).fetchone()[0]
        baseline = 0
        if not exists:
            self.conn.execute(create_table_sql(self.conn, meta, schema, table, defer_indexes=True).encode())
            self.deferred.extend(index_constraints_sql(meta, schema, table))
        elif self.existing == "fail":
            if self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(qualified)).fetchone()[0]:
                raise TargetError(
                    f"table {schema}.{table} in target {self.target.name!r} is not empty "
                    "(choose existing = truncate or append)"
                )
        elif self.existing == "truncate":
            self.conn.execute(sql.SQL("TRUNCATE {}").format(qualified))
        else:
            baseline = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)).fetchone()[0]
        self.tables[collection] = (qualified, meta.get("identity", []), baseline)

    @contextmanager
    def open_out(self, collection: str) -> Iterator[Any]:
        qualified = self.tables[collection][0]
        with self.conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(qualified)) as copy:
            yield copy

    def count_items(self, collection: str) -> int:
        """Called once loading is done: builds the deferred indexes first, so a duplicate
        key fails the restore before the counts are trusted."""
        while self.deferred:
            self.conn.execute(self.deferred.pop(0))
        if collection not in self.tables:
            return 0
        qualified, _, baseline = self.tables[collection]
        return (
            self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)).fetchone()[0] - baseline
        )

    def commit(self) -> None:
        """Resyncs identity sequences so new rows do not collide with restored ones."""
        for qualified, identity, _ in self.tables.values():
            for column in identity:
                self.conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence(%s, %s), GREATEST((SELECT max({}) FROM {}), 1))"
                    ).format(sql.Identifier(column), qualified),
                    (qualified.as_string(self.conn), column),
                )


class PostgresTarget:
    kind = "postgresql"

    def __init__(self, name: str, url: str, password: str | None, existing: str) -> None:
        self.name = name
        self.url = url
        self.password = password
        self.existing = existing

    @contextmanager
    def open(self, source_kind: str, existing: str | None = None) -> Iterator[_RestoreSession]:
        if source_kind != "postgresql":
            raise TargetError(f"target {self.name!r} takes PostgreSQL snapshots, not {source_kind}")
        conn = _connect(self.name, self.url, self.password, "target")
        try:
            with conn.transaction():  # all tables or none
                yield _RestoreSession(self, conn, existing or self.existing)
        finally:
            conn.close()
