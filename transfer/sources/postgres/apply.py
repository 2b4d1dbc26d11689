"""Running a restore plan against the target the way pg_restore would.

Every connection gets pg_restore's session settings; each entry runs with the tablespace
and table access method pg_dump recorded; owners and grants follow only when asked
(`keep_owners`). Post-data entries (indexes, constraints, foreign keys, triggers) run in
parallel as `pg_restore -j` runs them: an entry starts once what it depends on is done (a
table once its rows are loaded), and an entry that takes an exclusive lock on a table never
runs beside another entry of that table. Cleanup drops what a failed restore created, in
reverse order, with pg_dump's own DROP statements.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from transfer.errors import TargetError
from transfer.sources.postgres.plan import Plan, Step, describe
from transfer.sources.postgres.toc import SchemaDump

log = logging.getLogger("snapledger.postgres")


FIXED_SETTINGS = (
    "SET statement_timeout = 0",
    "SET lock_timeout = 0",
    "SET idle_in_transaction_session_timeout = 0",
    "SET client_encoding = 'UTF8'",
    "SET check_function_bodies = false",
    "SET xmloption = content",
    "SET client_min_messages = warning",
    "SET row_security = off",
)


# pg_restore's _getObjectDescription: what ALTER ... OWNER TO names, by entry type.
PLAIN_OWNED = frozenset(
    {
        "COLLATION", "CONVERSION", "DOMAIN", "FOREIGN TABLE", "MATERIALIZED VIEW", "SEQUENCE",
        "STATISTICS", "TABLE", "TEXT SEARCH DICTIONARY", "TEXT SEARCH CONFIGURATION", "TYPE", "VIEW",
        "PROCEDURAL LANGUAGE", "SCHEMA", "EVENT TRIGGER", "FOREIGN DATA WRAPPER", "SERVER", "PUBLICATION",
    }
)  # fmt: skip


DROP_OWNED = frozenset(
    {"AGGREGATE", "FUNCTION", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "PROCEDURE"}
)


ABSENT = (
    psycopg.errors.UndefinedObject,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.InvalidSchemaName,
)


RELATION_ADDRESS = ("table", "view", "sequence", "materialized view", "foreign table", "index")


def session_statements(dump: SchemaDump, server_version: int) -> list[str]:
    statements = list(FIXED_SETTINGS)
    for kind in ("STDSTRINGS", "SEARCHPATH"):
        text = dump.setting(kind)
        if text:
            statements.append(text)
    if server_version >= 140000:
        # A query whose client died (a killed worker) ends within seconds, instead of
        # holding its locks until an index build finishes.
        statements.append("SET client_connection_check_interval = '2s'")
    return statements


def prepare_connection(conn: psycopg.Connection, statements: Iterable[str]) -> None:
    """Session settings, committed: each later transaction of the connection starts clean."""
    for statement in statements:
        conn.execute(statement)
    conn.commit()


def _owner_target(step: Step) -> sql.Composable | None:
    e = step.entry
    if not e.owner or not e.drop_stmt:
        return None
    if e.desc in PLAIN_OWNED:
        if step.qualified is not None:
            name: sql.Composable = sql.Identifier(*step.qualified)
        else:
            name = sql.Identifier(e.namespace, e.tag) if e.namespace else sql.Identifier(e.tag)
        return sql.SQL("{} {}").format(sql.SQL(e.desc), name)
    if e.desc in DROP_OWNED:
        body = step.drop.strip().removeprefix("DROP ").rstrip(";\n ")
        return sql.SQL(body)  # pg_dump's own DROP statement names the object with its arguments
    return None


@dataclass
class Notes:
    """What the restore record says about the schema besides the counts."""

    skipped: list[dict[str, str]] = field(default_factory=list)
    missing_roles: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def role_missing(self, what: str, role: str | None) -> None:
        with self.lock:
            if role:
                self.missing_roles.add(role)
            self.skipped.append(
                {"object": what, "reason": f"role {role or '?'} does not exist in the target"}
            )


class Runner:
    """Runs steps on connections, with pg_restore's per-entry settings and error context."""

    def __init__(self, keep_owners: bool, tablespaces: set[str], notes: Notes) -> None:
        self.keep_owners = keep_owners
        self.tablespaces = tablespaces
        self.notes = notes
        self._state: dict[int, tuple[str | None, str | None]] = {}

    def _settings(self, conn: psycopg.Connection, step: Step) -> None:
        e = step.entry
        space, am = self._state.get(id(conn), (None, None))
        if e.desc in ("TABLE", "INDEX", "CONSTRAINT", "MATERIALIZED VIEW"):
            wanted = e.tablespace if e.tablespace in self.tablespaces else ""
            if wanted != space:
                conn.execute(sql.SQL("SET default_tablespace = {}").format(sql.Literal(wanted)))
                space = wanted
        if e.tableam and e.tableam != am:
            conn.execute(sql.SQL("SET default_table_access_method = {}").format(sql.Identifier(e.tableam)))
            am = e.tableam
        self._state[id(conn)] = (space, am)

    def run(self, conn: psycopg.Connection, step: Step) -> None:
        e = step.entry
        if e.desc in ("ACL", "DEFAULT ACL") and not self.keep_owners:
            return
        self._settings(conn, step)
        text = step.sql.strip()
        if not text or text.startswith("--") and "\n" not in text:
            return
        try:
            if e.desc in ("ACL", "DEFAULT ACL"):
                self._tolerating_roles(conn, text, describe(e, step.qualified))
            else:
                conn.execute(text)
        except psycopg.Error as err:
            raise TargetError(f"restoring {describe(e, step.qualified)} failed: {_first_line(err)}") from None
        if self.keep_owners:
            target = _owner_target(step)
            if target is not None:
                statement = sql.SQL("ALTER {} OWNER TO {}").format(target, sql.Identifier(e.owner))
                what = describe(e, step.qualified)
                try:
                    self._tolerating_roles(conn, statement, f"owner of {what}", e.owner)
                except psycopg.Error as err:  # e.g. the restoring role may not give objects away
                    raise TargetError(
                        f"keeping the owner {e.owner} of {what} failed: {_first_line(err)}"
                    ) from None

    def _tolerating_roles(
        self, conn: psycopg.Connection, statement: Any, what: str, role: str | None = None
    ) -> None:
        """A grant or owner naming a role the target lacks is listed, not fatal."""
        try:
            with conn.transaction():
                conn.execute(statement)
        except psycopg.errors.UndefinedObject as err:
            name = role or _quoted_name(str(err))
            self.notes.role_missing(what, name)


def _quoted_name(message: str) -> str | None:
    start = message.find('"')
    end = message.find('"', start + 1)
    return message[start + 1 : end] if 0 <= start < end else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ------------------------------------------------------------------ what the target has
def _address(step: Step, state: dict[str, Any]) -> list[Any] | None:
    e = step.entry
    if step.qualified is not None and e.dump_id in state.get("renamed_ids", ()):
        return ["table", list(step.qualified), []]
    found = state["objects"].get(str(e.dump_id))
    if found is None:
        return None
    kind, names, args = found
    if step.qualified is not None and kind in RELATION_ADDRESS:
        names = list(step.qualified)
    return [kind, names, args]


def existing_objects(conn: psycopg.Connection, plan: Plan, state: dict[str, Any]) -> set[int]:
    """Dump ids of the objects the plan would create that the target already has."""
    state = {**state, "renamed_ids": set(plan.renamed)}
    found: set[int] = set()
    relations: list[tuple[int, str]] = []
    others: list[tuple[int, list[Any]]] = []
    for step in plan.steps:
        if not step.creates:
            continue
        address = _address(step, state)
        if address is None:
            continue
        if address[0] in RELATION_ADDRESS and len(address[1]) == 2:
            relations.append((step.entry.dump_id, sql.Identifier(*address[1]).as_string(conn)))
        else:
            others.append((step.entry.dump_id, address))
    if relations:
        rows = conn.execute(
            "SELECT i FROM unnest(%s::int[], %s::text[]) AS x(i, n) WHERE to_regclass(n) IS NOT NULL",
            ([r[0] for r in relations], [r[1] for r in relations]),
        ).fetchall()
        found.update(r[0] for r in rows)
    for dump_id, (kind, names, args) in others:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_get_object_address(%s, %s::text[], %s::text[])", (kind, names, args))
            found.add(dump_id)
        except psycopg.errors.DataError:
            raise
        except (psycopg.ProgrammingError, psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedObject):
            pass
    return found


def colliding_names(conn: psycopg.Connection, plan: Plan, new_roots: set[int]) -> list[str]:
    """Indexes and sequences a new table would create whose names the target already uses."""
    names = []
    for step in plan.steps:
        e = step.entry
        if step.root not in new_roots or step.root == e.dump_id or step.qualified is None:
            continue
        if e.desc in ("SEQUENCE", "INDEX"):
            names.append(step.qualified)
    if not names:
        return []
    texts = [sql.Identifier(*n).as_string(conn) for n in names]
    rows = conn.execute(
        "SELECT n FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL", (texts,)
    ).fetchall()
    return [r[0] for r in rows]


def tablespaces(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT spcname FROM pg_tablespace").fetchall()}


def missing_roles(conn: psycopg.Connection, roles: Iterable[str]) -> set[str]:
    wanted = sorted(set(roles))
    if not wanted:
        return set()
    rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,)).fetchall()
    return set(wanted) - {r[0] for r in rows}


# ------------------------------------------------------------------ cleanup
def drop_created(conn: psycopg.Connection, steps: list[Step], schemas: list[str]) -> list[str]:
    """Drops, newest first, what this restore created, as `pg_restore --clean` does (every
    entry's own DROP: a default before its sequence, a constraint before its table);
    answers what could not be dropped."""
    left = []
    for step in reversed(steps):
        if not step.drop.strip():
            continue
        try:
            with conn.transaction():
                conn.execute(step.drop)
        except ABSENT:
            continue
        except psycopg.Error as err:
            if step.creates:
                left.append(f"{describe(step.entry, step.qualified)} ({_first_line(err)})")
    for schema in schemas:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema)))
        except ABSENT:
            continue
        except psycopg.Error as err:
            left.append(f"schema {schema} ({_first_line(err)})")
    return left


def end_sessions(conn: psycopg.Connection, application_name: str, timeout: float = 30) -> None:
    """Ends what a dead attempt left running under this restore's name, before cleaning."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database() "
            "AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
        if not rows or time.monotonic() > deadline:
            return
        for (pid,) in rows:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
