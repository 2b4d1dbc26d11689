"""PostgreSQL as source and restore target: the schema from pg_dump, the rows as COPY text.

Backup: one REPEATABLE READ, READ ONLY transaction exports its snapshot; `pg_dump
--schema-only --snapshot` (the reference for what a schema is) and every table's `COPY ...
TO STDOUT` run in that one snapshot, so schema and rows are the same point in time. The
archive holds the schema dump (`schema/schema.dump`, pg_dump's custom format), what a
restore needs besides it (`schema/state.json`: sequence values, populated materialized
views, which table each index or constraint belongs to, object identities, roles), two psql
scripts for restoring by hand, and one COPY member per table.

Restore: pg_restore's order and rules (transfer/pg_plan.py, transfer/pg_apply.py). Into
new tables it runs pre-data in one transaction, loads the rows, builds indexes and
constraints in parallel as `pg_restore -j` does, sets sequence values, then refreshes
materialized views; a failure or a stop drops everything it created. Into tables that
already exist it runs in one transaction, so the target keeps its rows or gets all of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psycopg
from psycopg import pq, sql

from transfer import pg_apply, pg_catalog
from transfer.archive import ArchiveError, member_name
from transfer.errors import AlreadyRestored, SourceError, TargetError
from transfer.pg_legacy import LegacySession
from transfer.pg_plan import Plan, Step, build, describe
from transfer.pg_toc import DumpFormatError, SchemaDump, check_with_pg_restore, read_dump
from transfer.pg_tools import ToolError, find, require_pg_dump, run_pg_dump, server_major, server_text

log = logging.getLogger("snapledger.postgres")

CHUNK = 1 << 20
SPOOL_BYTES = 256 << 20  # rows of one table held on local disk while it waits for a connection
F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe lets psql run ahead while we compress
STATE_FORMAT = 1
SCHEMA_DUMP, STATE, LOAD_SCRIPT, REFRESH_SCRIPT = "schema.dump", "state.json", "load.psql", "refresh.psql"
EXISTING = ("fail", "truncate", "append")


def _scalar(cur: psycopg.Cursor[Any]) -> Any:
    """The one value of a query that answers one row (an aggregate, a bare SELECT)."""
    row = cur.fetchone()
    assert row is not None  # such a query always answers its row
    return row[0]


def conninfo(url: str, password: str | None) -> str:
    """The URL as libpq reads it, every parameter kept (sslmode, sslrootcert,
    target_session_attrs, options...); only the password comes from the environment."""
    parsed = urlparse(url)
    defaults = {} if parsed.hostname else {"host": "127.0.0.1"}  # a socket-less default, as before
    return psycopg.conninfo.make_conninfo(url, **defaults, password=password or None)


def _connect(
    name: str, url: str, password: str | None, what: str, application_name: str = "snapledger"
) -> psycopg.Connection:
    try:
        return psycopg.connect(conninfo(url, password), connect_timeout=10, application_name=application_name)
    except psycopg.OperationalError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if password:
            first = first.replace(password, "***")
        error = SourceError if what == "source" else TargetError
        raise error(f"{what} {name!r}: cannot connect: {first}") from None


# ====================================================================== backup
class _BackupSession:
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
        self.snapshot = _scalar(conn.execute("SELECT pg_export_snapshot()"))
        self.encoding = _scalar(conn.execute("SHOW server_encoding"))
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
        _check_readable(dump, data)
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


def _check_readable(dump: SchemaDump, data: bytes) -> None:
    """pg_restore, the reference reader, must see the same entries as snapledger does."""
    try:
        pg_restore, _, version = find("pg_restore")
    except ToolError as e:
        raise SourceError(str(e)) from None
    with tempfile.NamedTemporaryFile(prefix="snapledger-schema-", suffix=".dump") as f:
        f.write(data)
        f.flush()
        try:
            check_with_pg_restore(dump, f.name, pg_restore)
        except DumpFormatError as e:
            raise SourceError(
                f"{e} (pg_restore {version}; the dump is from pg_dump {dump.dump_version}: "
                "pg_restore must be at least as new as the pg_dump that wrote it)"
            ) from None


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


# ====================================================================== restore
@dataclass
class RestoreOptions:
    keep_owners: bool = False
    parallel: int = 2
    should_stop: Callable[[], bool] = lambda: False
    on_plan: Callable[[dict[str, Any]], None] = lambda facts: None
    resume: dict[str, Any] | None = None  # the plan a dead attempt recorded
    run_id: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # rows' bytes per collection, from the manifest


def _read_schema(schema: dict[str, bytes]) -> SchemaDump:
    try:
        return read_dump(schema[SCHEMA_DUMP])
    except DumpFormatError as e:
        raise ArchiveError(f"the archive's schema dump cannot be read: {e}") from None


def check_schema(schema: dict[str, bytes]) -> None:
    """What `verify` checks besides checksums: the schema dump reads, with pg_restore too,
    and holds a table for every collection."""
    if SCHEMA_DUMP not in schema:
        return  # an archive of format 1: definitions per table
    dump = _read_schema(schema)
    try:
        _check_readable(dump, schema[SCHEMA_DUMP])
    except SourceError as e:
        raise ArchiveError(str(e)) from None
    state = _state(schema)
    for name, table in state["tables"].items():
        if dump.by_id.get(table["dump_id"]) is None or dump.by_id[table["dump_id"]].desc != "TABLE":
            raise TargetError(f"the schema dump has no table for collection {name!r}")


def _state(schema: dict[str, bytes]) -> dict[str, Any]:
    try:
        state = json.loads(schema[STATE])
    except (KeyError, ValueError):
        raise ArchiveError("the archive's schema/state.json is missing or not JSON") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ArchiveError("the archive's schema/state.json is of an unknown format")
    return state


class _Spool:
    """One table's rows on their way in. Up to SPOOL_BYTES they go to a temporary file and
    a connection of the pool loads them while the archive reader moves on to the next
    table (so tables load in parallel from one sequential archive); past that the reader
    streams the rest straight into a COPY of its own, so the disk holds at most a few
    spool files whatever the table sizes."""

    def __init__(self, session: _RestoreSession, table: Any) -> None:
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
                raise self.session._copy_failed(self.table, err) from None
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
                raise session._copy_failed(self.table, err) from None
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
                pg_apply.Load(self.table.dump_id, self.size, run), queue_limit=len(session.pool)
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


def _app_name(run_id: str) -> str:
    """Every connection of one restore carries its id, so a re-claim can end a dead
    attempt's sessions before cleaning up after it (a restore without an id, run by hand
    from Python, gets a random one: it must never match another restore's sessions)."""
    return f"snapledger-restore-{run_id}"[:63]


class _RestoreSession:
    """One restore into a PostgreSQL database; see the module docstring for what it
    guarantees in each mode."""

    def __init__(self, target: PostgresTarget, conn: psycopg.Connection, existing: str, opts: RestoreOptions):
        self.target = target
        self.conn = conn
        self.existing_mode = existing
        self.opts = opts
        self.notes = pg_apply.Notes()
        self.plan: Plan | None = None
        self.state: dict[str, Any] = {}
        self.parallel = False
        self.run_steps: list[Step] = []
        self.copied: dict[str, int] = {}
        self.baseline: dict[str, int] = {}
        self.loader: psycopg.Connection | None = None
        self.pool: list[psycopg.Connection] = []
        self.scheduler: pg_apply.Scheduler | None = None
        self.opened: set[int] = set()
        self.finished = False
        self.created_schemas: list[str] = []
        self.wrote = False
        self.version = conn.info.server_version

    # ---------------------------------------------------------------- planning
    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        if SCHEMA_DUMP not in schema:
            raise TargetError("the archive has no PostgreSQL schema dump")
        dump = _read_schema(schema)
        try:
            _check_readable(dump, schema[SCHEMA_DUMP])
        except SourceError as e:
            raise ArchiveError(str(e)) from None
        state = self.state = _state(schema)
        source = int(state["server_version_num"])
        if server_major(self.version) < server_major(source):
            raise TargetError(
                f"target {self.target.name!r} runs PostgreSQL {server_text(self.version)}, older than "
                f"{server_text(source)} the snapshot came from: restore into {server_major(source)} or newer"
            )
        self.statements = pg_apply.session_statements(dump, self.version)
        pg_apply.prepare_connection(self.conn, self.statements)
        self.dump = dump
        if self.opts.resume:
            self._check_dead_commit()
            self._clean_dead_attempt(dump, state, selection, mapping or {})
        plan = self.plan = build(dump, state, selection, mapping or {}, self._taken(mapping or {}, state))
        plan.existing = pg_apply.existing_objects(self.conn, plan, state)
        self.notes.skipped.extend(plan.skipped)
        existing_tables = [t for t in plan.tables.values() if t.dump_id in plan.existing]
        for table in existing_tables:
            table.exists = True
        self._existing_tables(existing_tables)
        new_roots = {t.dump_id for t in plan.tables.values() if not t.exists}
        collisions = pg_apply.colliding_names(self.conn, plan, new_roots)
        if collisions:
            raise TargetError(
                f"target {self.target.name!r} already has {', '.join(collisions[:5])}, "
                "which this restore would "
                "create for a new table (rename the table with a mapping, or restore into another database)"
            )
        if self.opts.keep_owners:
            self.notes.missing_roles |= pg_apply.missing_roles(self.conn, state.get("roles", []))
        self.parallel = not existing_tables and self.opts.parallel > 1
        self.run_steps = [
            s for s in plan.steps if s.root not in plan.existing and s.entry.dump_id not in plan.existing
        ]
        self.runner = pg_apply.Runner(self.opts.keep_owners, pg_apply.tablespaces(self.conn), self.notes)
        self.facts = {"mode": "parallel" if self.parallel else "single", "existing": sorted(plan.existing)}
        self.opts.on_plan(self.facts)
        self.wrote = True
        self._pre_data(plan)
        if self.parallel:
            self._start_parallel(plan)

    def _taken(self, mapping: dict[str, str], state: dict[str, Any]) -> dict[str, set[str]]:
        schemas = {
            v.partition(".")[0] if "." in v else state["tables"][k]["schema"]
            for k, v in mapping.items()
            if k in state["tables"]
        }
        taken: dict[str, set[str]] = {}
        for schema in schemas:
            rows = self.conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s",
                (schema,),
            ).fetchall()
            taken[schema] = {r[0] for r in rows}
        return taken

    def _existing_tables(self, tables: list[Any]) -> None:
        """fail: refuse before writing if one holds rows; truncate: empty them all at once (in
        the restore's transaction); append: count what is there, to check what is added."""
        if not tables:
            return
        self._suspend_foreign_keys(tables)
        if self.existing_mode == "truncate":
            try:
                with self.conn.transaction():
                    self.conn.execute(
                        sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.identifier for t in tables))
                    )
            except psycopg.errors.FeatureNotSupported as err:
                detail = (err.diag.message_detail or "").rstrip(".")
                raise TargetError(
                    f"cannot empty the tables of target {self.target.name!r}: {detail}, "
                    "and it is not restored "
                    "(restore that table too, or choose existing = append)"
                ) from None
            return
        for table in tables:
            ident = table.identifier
            if self.existing_mode == "fail":
                if _scalar(self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident))):
                    raise TargetError(
                        f"table {table.schema}.{table.name} in target {self.target.name!r} is not empty "
                        "(choose existing = truncate or append)"
                    )
            else:
                self.baseline[table.collection] = _scalar(
                    self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
                )

    def _suspend_foreign_keys(self, tables: list[Any]) -> None:
        """Rows arrive table by table in archive order, so a foreign key between two existing
        tables of the restore would refuse a child row before its parent arrived. Those keys
        are dropped inside the restore's transaction and added back, from the target's own
        definition, once every row is in: checked in full then, or the restore fails whole."""
        oids = [
            _scalar(self.conn.execute("SELECT to_regclass(%s)::oid", (t.identifier.as_string(self.conn),)))
            for t in tables
        ]
        rows = self.conn.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
               WHERE contype = 'f' AND conrelid = ANY(%s) AND confrelid = ANY(%s) ORDER BY oid""",
            (oids, oids),
        ).fetchall()
        for relation, name, _ in rows:
            self.conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(relation), sql.Identifier(name))
            )
        self.suspended = rows

    def _restore_foreign_keys(self) -> None:
        for relation, name, definition in getattr(self, "suspended", []):
            try:
                with self.conn.transaction():
                    self.conn.execute(
                        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                            sql.SQL(relation), sql.Identifier(name), sql.SQL(definition)
                        )
                    )
            except psycopg.Error as err:
                raise TargetError(
                    f"the restored rows break foreign key {name} of {relation}: {pg_apply._first_line(err)}"
                ) from None

    def _check_dead_commit(self) -> None:
        """A dead attempt that recorded its last transaction: done if the target committed it."""
        facts = self.opts.resume or {}
        xid = facts.get("committing")
        if not xid:
            return
        with self._autocommit():
            pg_apply.end_sessions(self.conn, self._app_name())
            status = _scalar(self.conn.execute("SELECT txid_status(%s::bigint)", (int(xid),)))
        if status == "committed":
            raise AlreadyRestored(facts.get("notes"))
        log.info("restore %s: the previous attempt's last transaction is %s", self.opts.run_id, status)

    def _clean_dead_attempt(
        self, dump: SchemaDump, state: dict[str, Any], selection: list[str] | None, mapping: dict[str, str]
    ) -> None:
        """A re-claimed restore whose dead attempt created objects in parallel mode: drop what
        that attempt created (what was not there before it, by its recorded plan)."""
        facts = self.opts.resume or {}
        if facts.get("mode") != "parallel":
            return  # one transaction: the server rolled it back when the connection died
        with self._autocommit():
            pg_apply.end_sessions(self.conn, self._app_name())
            plan = build(dump, state, selection, mapping, self._taken(mapping, state))
            before = set(facts.get("existing", []))
            steps = [s for s in plan.steps if s.root not in before and s.entry.dump_id not in before]
            left = pg_apply.drop_created(self.conn, steps, [])
        if left:
            raise TargetError("cannot clean what the previous attempt created: " + "; ".join(left[:5]))
        log.info("restore %s: removed what the previous attempt created", self.opts.run_id)

    def _app_name(self) -> str:
        return _app_name(self.opts.run_id)

    @contextmanager
    def _autocommit(self) -> Iterator[None]:
        if self.conn.info.transaction_status != pq.TransactionStatus.IDLE:
            self.conn.rollback()
        self.conn.autocommit = True
        try:
            yield
        finally:
            self.conn.autocommit = False

    # ---------------------------------------------------------------- running
    def _pre_data(self, plan: Plan) -> None:
        for schema in plan.new_schemas:
            created = _scalar(
                self.conn.execute(
                    "SELECT to_regnamespace(%s) IS NULL", (sql.Identifier(schema).as_string(self.conn),)
                )
            )
            if created:
                self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                self.created_schemas.append(schema)
        for step in self.run_steps:
            if step.phase == "pre-data":
                self.runner.run(self.conn, step)
        if self.parallel:
            self.conn.commit()

    def _open_extra(self) -> psycopg.Connection:
        conn = _connect(self.target.name, self.target.url, self.target.password, "target", self._app_name())
        pg_apply.prepare_connection(conn, self.statements)
        encoding = self.state.get("encoding", "UTF8")
        if encoding != "UTF8":  # rows arrive in the source's encoding; statements are text either way
            conn.execute(sql.SQL("SET client_encoding = {}").format(sql.Literal(encoding)))
            conn.commit()
        return conn

    def _start_parallel(self, plan: Plan) -> None:
        self.loader = self._open_extra()
        self.pool = [self._open_extra() for _ in range(self.opts.parallel)]
        post = [s for s in self.run_steps if s.phase == "post-data"]
        loading = {t.dump_id for t in plan.tables.values()}
        sizes = {v["dump_id"]: v.get("bytes", 0) for v in self.state["tables"].values()}
        tables = {s.entry.dump_id for s in plan.steps if s.entry.desc == "TABLE"}
        self.scheduler = pg_apply.Scheduler(
            post, self.pool, self.runner, loading, tables, lambda d: sizes.get(d, 0)
        )
        self.scheduler.start()

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        assert self.plan is not None
        if collection not in self.plan.tables:
            raise TargetError(f"collection {collection!r} is not in this restore's plan")

    def _copy_failed(self, table: Any, err: psycopg.Error) -> TargetError:
        return TargetError(
            f"loading the rows of {table.schema}.{table.name} failed: {pg_apply._first_line(err)}"
        )

    @contextmanager
    def open_out(self, collection: str) -> Iterator[Any]:
        assert self.plan is not None
        table = self.plan.tables[collection]
        self.opened.add(table.dump_id)
        if self.scheduler is not None:
            spool = _Spool(self, table)
            if self.opts.sizes.get(collection, 0) > SPOOL_BYTES:
                spool.go_direct()  # too big to wait on disk: stream it in from the first byte
            try:
                yield spool
            except BaseException as e:
                spool.abort(e)
                raise
            spool.finish()
            return
        encoding = self.state.get("encoding", "UTF8")
        if encoding != "UTF8":
            self.conn.execute(sql.SQL("SET client_encoding = {}").format(sql.Literal(encoding)))
        with self.conn.cursor() as cur:
            try:
                with cur.copy(sql.SQL("COPY {} FROM STDIN").format(table.identifier)) as copy:
                    yield copy
            except psycopg.Error as err:
                raise self._copy_failed(table, err) from None
            self.copied[collection] = cur.rowcount
        if encoding != "UTF8":
            self.conn.execute("SET client_encoding = 'UTF8'")

    def copy_from(self, conn: psycopg.Connection, table: Any, chunks: Iterator[bytes]) -> None:
        """COPY one table's rows on a connection of the pool, in a transaction of its own."""
        try:
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY {} FROM STDIN").format(table.identifier)) as copy:
                    for chunk in chunks:
                        copy.write(chunk)
                self.copied[table.collection] = cur.rowcount
            conn.commit()
        except psycopg.Error as err:
            conn.rollback()
            raise self._copy_failed(table, err) from None

    def _finish(self) -> None:
        """After the last rows: sequence values, the rest of post-data, grants, then
        materialized views, as pg_restore orders them."""
        if self.finished:
            return
        self.finished = True
        assert self.plan is not None
        if self.scheduler is not None:
            for table in self.plan.tables.values():
                if table.dump_id not in self.opened:
                    self.scheduler.rows_loaded(table.dump_id)  # tables with no rows in the archive
            self._set_sequences()
            self.scheduler.wait(self.opts.should_stop)
        else:
            self._restore_foreign_keys()
            for step in self.run_steps:
                if step.phase == "post-data":
                    self.runner.run(self.conn, step)
            self._set_sequences()
        for phase in ("acl", "post-acl"):
            for step in self.run_steps:
                if step.phase == phase:
                    self.runner.run(self.conn, step)
        self._refresh_matviews()

    def _set_sequences(self) -> None:
        assert self.plan is not None
        values = self.state.get("sequences", {})
        created = {s.entry.dump_id for s in self.run_steps}
        for step in self.plan.steps:
            e = step.entry
            if e.desc != "SEQUENCE" or str(e.dump_id) not in values or step.qualified is None:
                continue
            if e.dump_id not in created and e.dump_id not in self.plan.existing:
                continue
            value, called = values[str(e.dump_id)]
            name = sql.Identifier(*step.qualified).as_string(self.conn)
            if e.dump_id in self.plan.existing:  # the target's own sequence: only ever forward
                self.conn.execute(
                    sql.SQL(
                        "SELECT pg_catalog.setval(%s, %s, %s) FROM {} WHERE last_value < %s OR NOT is_called"
                    ).format(sql.Identifier(*step.qualified)),
                    (name, value, called, value),
                )
            else:
                self.conn.execute("SELECT pg_catalog.setval(%s, %s, %s)", (name, value, called))

    def _refresh_matviews(self) -> None:
        assert self.plan is not None
        populated = set(self.state.get("populated_matviews", []))
        for step in self.run_steps:
            if step.entry.desc == "MATERIALIZED VIEW" and step.entry.dump_id in populated:
                qualified = step.qualified
                assert qualified is not None  # the plan names every relation's step
                try:
                    self.conn.execute(
                        sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(*qualified))
                    )
                except psycopg.Error as err:
                    raise TargetError(
                        f"refreshing {describe(step.entry)} failed: {pg_apply._first_line(err)}"
                    ) from None

    def count_items(self, collection: str) -> int:
        """Called once loading is done: finishes post-data first, so a duplicate key or an
        orphan row fails the restore before the counts are trusted."""
        self._finish()
        assert self.plan is not None
        table = self.plan.tables.get(collection)
        if table is None:
            return 0
        if not table.exists:
            return self.copied.get(collection, 0)
        total: int = _scalar(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier)))
        return total - self.baseline.get(collection, 0)

    def commit(self) -> None:
        """The last transaction makes the restore whole. Its id is recorded first, so that if
        this worker dies between the COMMIT and the completion event, the next attempt asks
        the target whether it committed (txid_status) instead of restoring again."""
        self._finish()
        xid = _scalar(self.conn.execute("SELECT txid_current()::text"))
        self.opts.on_plan({**self.facts, "committing": xid, "notes": self.schema_notes()})
        self.conn.commit()

    def schema_notes(self) -> dict[str, Any]:
        assert self.plan is not None
        notes: dict[str, Any] = {
            "mode": "parallel" if self.parallel else "one transaction",
            "created": sum(1 for s in self.run_steps if s.creates),
            "already_there": len(self.plan.existing),
        }
        if self.notes.skipped:
            notes["skipped"] = self.notes.skipped
        if self.opts.keep_owners:
            notes["missing_roles"] = sorted(self.notes.missing_roles)
        return notes

    def abort(self) -> list[str]:
        """Undoes a failed or stopped restore; answers what could not be removed."""
        if self.scheduler is not None:
            self.scheduler.cancel()
        for conn in (self.loader, *self.pool):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=5)
                with contextlib.suppress(Exception):
                    conn.close()
        with contextlib.suppress(Exception):
            self.conn.rollback()
        if not self.parallel or not self.wrote:
            return []
        with self._autocommit():
            return pg_apply.drop_created(self.conn, self.run_steps, self.created_schemas)

    def close(self) -> None:
        for conn in (self.loader, *self.pool):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


class PostgresTarget:
    kind = "postgresql"
    transactional = True  # one transaction, or (parallel) everything it created is dropped on failure

    def __init__(
        self,
        name: str,
        url: str,
        password: str | None,
        existing: str,
        parallel: int = 2,
        keep_owners: bool = False,
    ) -> None:
        self.name = name
        self.url = url
        self.password = password
        self.existing = existing
        self.parallel = parallel
        self.keep_owners = keep_owners

    @contextmanager
    def open(
        self,
        source_kind: str,
        existing: str | None = None,
        *,
        format_version: int = 2,
        keep_owners: bool | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
        run_id: str = "",
        sizes: dict[str, int] | None = None,
    ) -> Iterator[_RestoreSession | LegacySession]:
        if source_kind != "postgresql":
            raise TargetError(f"target {self.name!r} takes PostgreSQL snapshots, not {source_kind}")
        mode = existing or self.existing
        if format_version < 2:
            conn = _connect(self.name, self.url, self.password, "target")
            try:
                with conn.transaction():  # all tables or none
                    yield LegacySession(self, conn, mode)
            finally:
                conn.close()
            return
        run_id = run_id or f"adhoc-{uuid.uuid4().hex}"  # never another restore's name
        opts = RestoreOptions(
            keep_owners=self.keep_owners if keep_owners is None else keep_owners,
            parallel=self.parallel,
            should_stop=should_stop or (lambda: False),
            on_plan=on_plan or (lambda facts: None),
            resume=resume,
            run_id=run_id,
            sizes=sizes or {},
        )
        conn = _connect(self.name, self.url, self.password, "target", _app_name(run_id))
        session = _RestoreSession(self, conn, mode, opts)
        try:
            yield session
        except AlreadyRestored:
            raise  # nothing to undo: the target holds the whole restore
        except BaseException as e:
            left = session.abort()
            if left:
                log.error("restore into %s left objects it created: %s", self.name, "; ".join(left))
                if isinstance(e, Exception) and not type(e).__name__ == "Stopped":
                    raise TargetError(f"{e} (and cleanup could not remove: {'; '.join(left[:5])})") from e
            raise
        finally:
            session.close()
            conn.close()

    def cleanup_partials(self) -> int:
        return 0  # nothing is written aside; a re-claimed restore cleans up in begin() (resume)
