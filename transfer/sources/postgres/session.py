"""A restore into PostgreSQL, pg_restore's order and rules (`plan.py`, `apply.py`).

Into new tables it runs pre-data in one transaction, loads the rows, builds indexes and
constraints in parallel as `pg_restore -j` does, sets sequence values, then refreshes
materialized views; a failure or a stop drops everything it created. Into tables that
already exist it runs in one transaction, so the target keeps its rows or gets all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import psycopg
from psycopg import pq, sql

from transfer.archive.format import ArchiveError
from transfer.errors import AlreadyRestored, SourceError, TargetError, no_changes_to_replay
from transfer.sources.postgres import apply as pg_apply
from transfer.sources.postgres import spool as spooling
from transfer.sources.postgres.connection import connect, log, scalar
from transfer.sources.postgres.members import SCHEMA_DUMP, check_readable, read_schema, read_state
from transfer.sources.postgres.plan import Plan, Step, build, describe
from transfer.sources.postgres.scheduler import Scheduler
from transfer.sources.postgres.spool import Spool
from transfer.sources.postgres.toc import SchemaDump
from transfer.sources.postgres.tools import (
    server_major,
    server_text,
)


class TargetAddress(Protocol):
    """Where a restore session connects: the configured target's name, URL and password."""

    name: str
    url: str
    password: str | None


@dataclass
class RestoreOptions:
    keep_owners: bool = False
    parallel: int = 2
    should_stop: Callable[[], bool] = lambda: False
    on_plan: Callable[[dict[str, Any]], None] = lambda facts: None
    resume: dict[str, Any] | None = None  # the plan a dead attempt recorded
    run_id: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # rows' bytes per collection, from the manifest


def app_name(run_id: str) -> str:
    """Every connection of one restore carries its id, so a re-claim can end a dead
    attempt's sessions before cleaning up after it (a restore without an id, run by hand
    from Python, gets a random one: it must never match another restore's sessions)."""
    return f"snapledger-restore-{run_id}"[:63]


class PostgresRestoreSession:
    """One restore into a PostgreSQL database; see the module docstring for what it
    guarantees in each mode."""

    def __init__(self, target: TargetAddress, conn: psycopg.Connection, existing: str, opts: RestoreOptions):
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
        self.scheduler: Scheduler | None = None
        self.opened: set[int] = set()
        self.finished = False
        self.created_schemas: list[str] = []
        self.wrote = False
        self.suspended: list[tuple[str, str, str]] = []  # foreign keys dropped while loading (append)
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
        dump = read_schema(schema)
        try:
            check_readable(dump, schema[SCHEMA_DUMP])
        except SourceError as e:
            raise ArchiveError(str(e)) from None
        state = self.state = read_state(schema)
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
                if scalar(self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident))):
                    raise TargetError(
                        f"table {table.schema}.{table.name} in target {self.target.name!r} is not empty "
                        "(choose existing = truncate or append)"
                    )
            else:
                self.baseline[table.collection] = scalar(
                    self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
                )

    def _suspend_foreign_keys(self, tables: list[Any]) -> None:
        """Rows arrive table by table in archive order, so a foreign key between two existing
        tables of the restore would refuse a child row before its parent arrived. Those keys
        are dropped inside the restore's transaction and added back, from the target's own
        definition, once every row is in: checked in full then, or the restore fails whole."""
        oids = [
            scalar(self.conn.execute("SELECT to_regclass(%s)::oid", (t.identifier.as_string(self.conn),)))
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
        for relation, name, definition in self.suspended:
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
            status = scalar(self.conn.execute("SELECT txid_status(%s::bigint)", (int(xid),)))
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
        return app_name(self.opts.run_id)

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
            created = scalar(
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
        conn = connect(self.target.name, self.target.url, self.target.password, "target", self._app_name())
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
        self.scheduler = Scheduler(post, self.pool, self.runner, loading, tables, lambda d: sizes.get(d, 0))
        self.scheduler.start()

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        assert self.plan is not None
        if collection not in self.plan.tables:
            raise TargetError(f"collection {collection!r} is not in this restore's plan")

    def copy_failed(self, table: Any, err: psycopg.Error) -> TargetError:
        return TargetError(
            f"loading the rows of {table.schema}.{table.name} failed: {pg_apply._first_line(err)}"
        )

    def open_changes(self) -> NoReturn:
        no_changes_to_replay()

    @contextmanager
    def open_out(self, collection: str) -> Iterator[Any]:
        assert self.plan is not None
        table = self.plan.tables[collection]
        self.opened.add(table.dump_id)
        if self.scheduler is not None:
            spool = Spool(self, table)
            if self.opts.sizes.get(collection, 0) > spooling.SPOOL_BYTES:
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
                raise self.copy_failed(table, err) from None
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
            raise self.copy_failed(table, err) from None

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
        total: int = scalar(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier)))
        return total - self.baseline.get(collection, 0)

    def commit(self) -> None:
        """The last transaction makes the restore whole. Its id is recorded first, so that if
        this worker dies between the COMMIT and the completion event, the next attempt asks
        the target whether it committed (txid_status) instead of restoring again."""
        self._finish()
        xid = scalar(self.conn.execute("SELECT txid_current()::text"))
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
