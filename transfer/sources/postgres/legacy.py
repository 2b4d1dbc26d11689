"""Restoring PostgreSQL archives of format 1 (snapledger before pg_dump carried the schema).

Those archives hold one hand-built definition per table (columns, types, NOT NULL,
defaults, identity, primary, unique and check constraints) as SQL beside its rows. They
restore as they always did, in one transaction: missing tables are created from that
definition, keys are built after the rows, identity sequences are resynced. Foreign keys,
other indexes, views, functions and `serial` sequences were never in them. New snapshots
use pg_dump (source.py); nothing writes this format any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
from psycopg import sql

from transfer.errors import TargetError, no_changes_to_replay

HEADER = "-- snapledger-table: "


def _scalar(cur: psycopg.Cursor[Any]) -> Any:
    """The one value of a query that answers one row (an aggregate, a bare SELECT)."""
    row = cur.fetchone()
    assert row is not None  # such a query always answers its row
    return row[0]


def create_table_sql(
    conn: psycopg.Connection, meta: dict[str, Any], schema: str, table: str, defer_indexes: bool = False
) -> str:
    """With defer_indexes, primary keys and unique constraints are left for
    index_constraints_sql(): building an index once after COPY beats maintaining it per row."""
    renamed = (schema, table) != (meta["schema"], meta["table"])
    parts: list[sql.Composable] = [sql.SQL(c) for c in meta["columns"]]
    for name, definition in meta["constraints"]:
        if not (defer_indexes and _is_indexed(definition)):
            parts.append(_constraint(meta, name, definition, renamed))
    return (
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {};\nCREATE TABLE {} (\n  {}\n);\n")
        .format(sql.Identifier(schema), sql.Identifier(schema, table), sql.SQL(",\n  ").join(parts))
        .as_string(conn)
    )


def _constraint(meta: dict[str, Any], name: str, definition: str, renamed: bool) -> sql.Composable:
    """Keeps constraint names when the table keeps its name; a renamed copy gets fresh ones
    (constraint indexes share the schema's namespace with the original's)."""
    if renamed:
        return sql.SQL(definition)
    return sql.SQL("CONSTRAINT {} {}").format(sql.Identifier(name), sql.SQL(definition))


def _is_indexed(definition: str) -> bool:
    return definition.startswith(("PRIMARY KEY", "UNIQUE"))


def index_constraints_sql(meta: dict[str, Any], schema: str, table: str) -> list[sql.Composed]:
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


class LegacySession:
    def __init__(self, target: Any, conn: psycopg.Connection, existing: str) -> None:
        self.target = target
        self.conn = conn
        self.existing = existing
        self.deferred: list[sql.Composed] = []
        self.tables: dict[str, tuple[sql.Composable, list[str], int]] = {}

    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        pass  # format 1 has no schema dump: each table comes with its own definition

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
        exists = _scalar(
            self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified.as_string(self.conn),))
        )
        baseline = 0
        if not exists:
            self.conn.execute(create_table_sql(self.conn, meta, schema, table, defer_indexes=True).encode())
            self.deferred.extend(index_constraints_sql(meta, schema, table))
        elif self.existing == "fail":
            if _scalar(self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(qualified))):
                raise TargetError(
                    f"table {schema}.{table} in target {self.target.name!r} is not empty "
                    "(choose existing = truncate or append)"
                )
        elif self.existing == "truncate":
            self.conn.execute(sql.SQL("TRUNCATE {}").format(qualified))
        else:
            baseline = _scalar(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)))
        self.tables[collection] = (qualified, meta.get("identity", []), baseline)

    def open_changes(self) -> NoReturn:
        no_changes_to_replay()

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
        total: int = _scalar(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified)))
        return total - baseline

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

    def schema_notes(self) -> dict[str, Any] | None:
        return None  # nothing beyond the counts to report
