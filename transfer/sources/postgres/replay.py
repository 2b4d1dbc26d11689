"""Captured transactions applied to a restored database, each in a transaction of its own.

Values travel as their output text inside one JSON object per row, turned back into
column values by `json_populate_record` on the target (the type's own input function),
so no type name read from an archive is ever spliced into SQL. A row to update or delete
is found by its replica identity (the old key, or the primary key of the new row); one
that is not there, or is there twice, means the target is not the snapshot the changes
follow, and the replay stops, naming the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar

import psycopg
from psycopg import sql

from transfer.errors import TargetError
from transfer.sources.postgres.capture import Transaction, lsn_value
from transfer.sources.postgres.decoding import Change, Column, parse_change

_JSON_TYPES = ("json", "jsonb")


@dataclass(frozen=True)
class _Table:
    ident: sql.Composable
    generated: frozenset[str]
    primary_key: tuple[str, ...]
    not_null: frozenset[str]
    types: dict[str, str]  # column -> format_type, as test_decoding spells it


class ChangeReplayer:
    """`mapping` renames tables ("schema.table" -> "schema.table"); `only` (when given)
    is the set of source tables restored: changes to others are skipped and counted."""

    def __init__(
        self, conn: psycopg.Connection, mapping: dict[str, str] | None = None, only: set[str] | None = None
    ) -> None:
        self.conn = conn
        self.mapping = mapping or {}
        self.only = only
        self.tables: dict[tuple[str, str], _Table] = {}
        self._statements: dict[tuple[Any, ...], str] = {}
        self.applied = 0
        self.skipped = 0
        self.transactions = 0
        self.last_lsn: str | None = None
        self.last_commit: str | None = None

    def catch_up_sequences(self) -> dict[str, int]:
        """Sequence values are not in the stream: each sequence that owns a column of a
        table the replay wrote moves up to that column's greatest value, so the restored
        database's next insert does not collide with a replayed row. Answers what moved."""
        moved: dict[str, int] = {}
        for schema, name in sorted(self.tables):
            owned = self.conn.execute(
                """SELECT s.oid::regclass::text, a.attname
                   FROM pg_depend d
                   JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                     AND d.deptype IN ('a', 'i') AND d.refobjid = %s::regclass""",
                (sql.Identifier(schema, name).as_string(self.conn),),
            ).fetchall()
            for sequence, column in owned:
                top = self.conn.execute(
                    sql.SQL("SELECT max({c})::bigint FROM {t}").format(
                        c=sql.Identifier(column), t=sql.Identifier(schema, name)
                    )
                ).fetchone()
                if top is None or top[0] is None:
                    continue
                current = self.conn.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence))
                ).fetchone()
                assert current is not None
                if int(top[0]) > int(current[0]) or (int(top[0]) == int(current[0]) and not current[1]):
                    self.conn.execute("SELECT setval(%s::regclass, %s, true)", (sequence, int(top[0])))
                    moved[sequence] = int(top[0])
        return moved

    def _target(self, table: tuple[str, str]) -> tuple[str, str]:
        name = f"{table[0]}.{table[1]}"
        mapped = self.mapping.get(name)
        if mapped is None:
            return table
        schema, _, rel = mapped.partition(".")
        return schema, rel

    def _table(self, table: tuple[str, str]) -> _Table:
        found = self.tables.get(table)
        if found is not None:
            return found
        rows = self.conn.execute(
            """SELECT a.attname, a.attgenerated <> '', a.attnotnull,
                      coalesce(a.attnum = ANY(i.indkey), false), format_type(a.atttypid, NULL)
               FROM pg_attribute a
               LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
               WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
            (sql.Identifier(*table).as_string(self.conn),),
        ).fetchall()
        if not rows:
            raise TargetError(f"table {table[0]}.{table[1]} is not in the target")
        found = _Table(
            ident=sql.Identifier(*table),
            generated=frozenset(r[0] for r in rows if r[1]),
            primary_key=tuple(r[0] for r in rows if r[3]),
            not_null=frozenset(r[0] for r in rows if r[2]),
            types={r[0]: r[4] for r in rows},
        )
        self.tables[table] = found
        return found

    def apply(self, txn: Transaction) -> None:
        """One source transaction as one target transaction: all of it, or none."""
        with self.conn.transaction():
            for line in txn.changes:
                change = parse_change(line)
                if self.only is not None and not any(f"{s}.{t}" in self.only for s, t in change.tables):
                    self.skipped += 1
                    continue
                self._one(change, txn)
                self.applied += 1
        self.transactions += 1
        self.last_lsn, self.last_commit = txn.commit_lsn, txn.commit_time

    def _statement(self, key: tuple[Any, ...], build: Callable[[], sql.Composable]) -> str:
        """Each statement shape rendered once: composing SQL per change cost a third of the
        replay (bench/pg_capture.py); psycopg then prepares the repeated ones."""
        found = self._statements.get(key)
        if found is None:
            found = self._statements[key] = build().as_string(self.conn)
        return found

    def _one(self, change: Change, txn: Transaction) -> None:
        if change.action == "TRUNCATE":
            idents = [self._table(self._target(t)).ident for t in change.tables]
            truncate = sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(idents))
            if "restart_seqs" in change.flags:
                truncate += sql.SQL(" RESTART IDENTITY")
            if "cascade" in change.flags:
                truncate += sql.SQL(" CASCADE")
            self.conn.execute(truncate)
            return
        name = self._target(change.table)
        table = self._table(name)
        self._same_shape(change, table, txn)
        if change.action == "INSERT":
            columns = [c for c in change.new if c.name not in table.generated]
            names = tuple(c.name for c in columns)
            self.conn.execute(
                self._statement(("INSERT", name, names), lambda: _insert(table, names)), (_record(columns),)
            )
            return
        key = change.old or tuple(c for c in change.new if c.name in table.primary_key)
        if not key:
            raise TargetError(
                f"an {change.action} on {change.table[0]}.{change.table[1]} (transaction {txn.xid}) "
                "carries no key: the table has neither a primary key nor REPLICA IDENTITY FULL"
            )
        keys = tuple(c.name for c in key)
        if set(keys) <= set(table.primary_key):  # by the key's index: one row, or none
            if change.action == "DELETE":
                query = self._statement(("DELETE", name, keys), lambda: _delete(table, keys))
                cur = self.conn.execute(query, (_record(key),))
            else:
                columns = self._changed(change, table)
                names = tuple(c.name for c in columns)
                query = self._statement(("UPDATE", name, names, keys), lambda: _update(table, names, keys))
                cur = self.conn.execute(query, (_record(columns), _record(key)))
            if cur.rowcount != 1:
                self._diverged(change, txn)
            return
        # No key: one row equal to the old one (identical rows are one as good as another).
        query = self._statement(("FIND", name, keys), lambda: _find(table, keys))
        found = self.conn.execute(query, (_record(key),)).fetchall()
        if not found:
            self._diverged(change, txn)
        ctid = found[0][0]
        if change.action == "DELETE":
            self.conn.execute(sql.SQL("DELETE FROM {t} WHERE ctid = %s::tid").format(t=table.ident), (ctid,))
            return
        columns = self._changed(change, table)
        names = tuple(c.name for c in columns)
        self.conn.execute(
            self._statement(("SET", name, names), lambda: _set_at(table, names)), (_record(columns), ctid)
        )

    @staticmethod
    def _same_shape(change: Change, table: _Table, txn: Transaction) -> None:
        """A row whose columns are not the target table's comes from after a change of the
        table's shape (DDL is not in the stream). The replay stops there, naming the commit
        and the column, rather than failing on a bare "column does not exist", or casting a
        value of a column whose type changed into the old type without a word."""
        for column in (*change.new, *change.old):
            found = table.types.get(column.name)
            if found != column.type:
                what = "has no column" if found is None else f"has {column.name!r} as {found}, not"
                detail = f"{what} {column.name!r}" if found is None else f"{what} {column.type}"
                raise TargetError(
                    f"{change.table[0]}.{change.table[1]} changed shape at commit {txn.commit_lsn} "
                    f"(transaction {txn.xid}): the restored table {detail}. Restore to a moment "
                    "before that commit, or from a snapshot taken after it"
                )

    @staticmethod
    def _changed(change: Change, table: _Table) -> list[Column]:
        return [c for c in change.new if not c.unchanged and c.name not in table.generated]

    @staticmethod
    def _diverged(change: Change, txn: Transaction) -> NoReturn:
        raise TargetError(
            f"{change.action} on {change.table[0]}.{change.table[1]} (transaction {txn.xid}, "
            f"commit {txn.commit_lsn}) finds no row by its key: the target is not the snapshot "
            "these changes follow"
        )


def _names(names: tuple[str, ...], prefix: str = "") -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(sql.Identifier(n)) for n in names)


def _match(keys: tuple[str, ...], exact: bool) -> sql.Composable:
    op = sql.SQL("=" if exact else "IS NOT DISTINCT FROM")
    return sql.SQL(" AND ").join(sql.SQL("t.{c} {op} k.{c}").format(c=sql.Identifier(k), op=op) for k in keys)


def _insert(table: _Table, names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(
        "INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} "
        "FROM json_populate_record(NULL::{t}, %s::json)"
    ).format(t=table.ident, cols=_names(names))


def _delete(table: _Table, keys: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("DELETE FROM {t} t USING json_populate_record(NULL::{t}, %s::json) k WHERE {m}").format(
        t=table.ident, m=_match(keys, True)
    )


def _update(table: _Table, names: tuple[str, ...], keys: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(
        "UPDATE {t} t SET ({cols}) = ROW({vals}) FROM json_populate_record(NULL::{t}, %s::json) n, "
        "json_populate_record(NULL::{t}, %s::json) k WHERE {m}"
    ).format(t=table.ident, cols=_names(names), vals=_names(names, "n."), m=_match(keys, True))


def _find(table: _Table, keys: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(
        "SELECT t.ctid FROM {t} t, json_populate_record(NULL::{t}, %s::json) k WHERE {m} LIMIT 1"
    ).format(t=table.ident, m=_match(keys, False))


def _set_at(table: _Table, names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(
        "UPDATE {t} SET ({cols}) = (SELECT {cols} FROM json_populate_record(NULL::{t}, %s::json)) "
        "WHERE ctid = %s::tid"
    ).format(t=table.ident, cols=_names(names))


def _record(columns: Any) -> str:
    """One JSON object of the row's output texts; json and jsonb values as the JSON they are."""
    parts = []
    for c in columns:
        if c.value is None:
            value = "null"
        elif c.type in _JSON_TYPES:
            value = c.value
        else:
            value = json.dumps(c.value, ensure_ascii=False)
        parts.append(json.dumps(c.name, ensure_ascii=False) + ":" + value)
    return "{" + ",".join(parts) + "}"


class Committed(Protocol):
    commit_lsn: str
    commit_time: str


T = TypeVar("T", bound=Committed)


def up_to(transactions: list[T], to_lsn: str | None = None, to_time: datetime | None = None) -> list[T]:
    """The transactions that committed at or before the position or moment: whole ones
    (PostgreSQL's, or a MongoDB oplog's, whose positions only to_time compares)."""
    out = []
    for txn in transactions:
        if to_lsn is not None and lsn_value(txn.commit_lsn) > lsn_value(to_lsn):
            break
        if to_time is not None and datetime.fromisoformat(txn.commit_time) > to_time:
            break
        out.append(txn)
    return out


__all__ = ["ChangeReplayer", "Column", "up_to"]
