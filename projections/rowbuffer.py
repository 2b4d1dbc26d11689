"""A batch's view writes, gathered per row and written once at the end of the batch.

A snapshot's events (requested, started, progressed, completed) rewrite the same rows
again and again; applied one statement each, a replay spends most of its time in SQL.
Handlers instead insert, update, read and delete rows by key through `Rows`: each row's
changes merge in memory and the batch ends with a few `executemany` calls, one per table
and column set. The result equals applying the statements one by one:
- an insert keeps ON CONFLICT DO NOTHING meaning: later updates of the row in the batch
  are applied on conflict too (DO UPDATE of just those columns);
- an update of a row that does not exist changes nothing, as an UPDATE would;
- a delete after an insert in the same batch still deletes (the row may predate it).
Any other statement (`execute`) writes the buffer out first, so set-based SQL sees every
earlier change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from projections.db import Cursor

# Tables keyed by another column than `id`:
KEYS = {
    "policy_snapshots": "snapshot_id", "capture_windows": "capture_id", "policy_drills": "drill_id",
    "snapshot_drills": "drill_id",
}  # fmt: skip


def key_of(table: str) -> str:
    return KEYS.get(table, "id")


@dataclass
class _Row:
    values: dict[str, Any] = field(default_factory=dict)  # the row's columns as far as known
    changed: set[str] = field(default_factory=set)  # set since the insert, or to UPDATE
    known: bool = False  # values are the whole row as the statements leave it (or missing)
    missing: bool = False  # known absent: updates change nothing
    insert: bool = False  # write as INSERT ... ON CONFLICT DO UPDATE SET changed
    delete: bool = False  # DELETE before anything else of this row
    stored: bool | None = None  # whether the table holds the row now (None: not looked up)


class Rows:
    """The cursor handlers get: row operations buffered, raw SQL passed through."""

    def __init__(self, cur: Cursor, before_write: Callable[[], None] | None = None) -> None:
        self.cur = cur
        self._tables: dict[str, dict[Any, _Row]] = {}
        self._before_write = before_write  # called once, before the first statement that may write

    def writing(self) -> None:
        """Says writes follow: the caller's lock is taken here, at most once per batch."""
        if self._before_write is not None:
            hook, self._before_write = self._before_write, None
            hook()

    # ---------------------------------------------------------------- row operations
    def _row(self, table: str, key: Any) -> _Row:
        rows = self._tables.get(table)
        if rows is None:
            rows = self._tables[table] = {}
        row = rows.get(key)
        if row is None:
            row = rows[key] = _Row()
        return row

    def insert(self, table: str, values: Mapping[str, Any], new: bool = False) -> None:
        """INSERT ... ON CONFLICT DO NOTHING, of a whole row. Whether the row was there
        is only looked up if a later read needs to know (`get`), unless the caller says
        the key is `new`: a creation event's row, which no earlier event can have written
        (the runner applies each event once per view), so reads need no lookup and a
        delete later in the batch needs no statement."""
        key = values[key_of(table)]
        row = self._row(table, key)
        if new and row.stored is None and not (row.changed or row.insert or row.delete):
            row.stored, row.known, row.missing = False, True, True
        if not row.known and row.changed and not row.insert:
            self.get(table, key)  # an update came first: whether it applied depends on the table
        if row.insert or (row.known and not row.missing):
            return  # the row exists (or an earlier insert in the batch settles it): DO NOTHING
        row.values, row.changed, row.insert = dict(values), set(), True
        row.missing = False  # `known` stays as it was: True only after a delete in the batch

    def update(self, table: str, key: Any, values: Mapping[str, Any]) -> None:
        row = self._row(table, key)
        if row.known and row.missing:
            return  # UPDATE of an absent row
        row.values.update(values)
        row.changed.update(values)

    def delete(self, table: str, key: Any) -> None:
        row = self._row(table, key)
        if row.insert and row.stored is False and not row.delete:
            del self._tables[table][key]  # created and deleted within the batch: no statement
            return
        row.values, row.changed = {}, set()
        row.known, row.missing, row.insert, row.delete = True, True, False, True

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        """The row as the statements so far would leave it, or None."""
        row = self._row(table, key)
        if not row.known:
            name = key_of(table)
            self.cur.execute(f"SELECT * FROM {table} WHERE {name} = %(k)s", {"k": key})
            stored = self.cur.fetchone()
            row.stored = stored is not None
            if row.insert:  # the insert stands unless the row was there (DO NOTHING)
                if stored is not None:
                    row.values = {**stored, **{c: row.values[c] for c in row.changed}}
                    row.insert = False
            elif stored is None:
                row.missing, row.values, row.changed = True, {}, set()
            else:
                row.values = {**stored, **row.values}
            row.known = True
        return None if row.missing else dict(row.values)

    # ------------------------------------------------------------------------ writing
    def flush(self) -> None:
        tables, self._tables = self._tables, {}
        if tables:
            self.writing()
        for table, rows in tables.items():
            name = key_of(table)
            deletes = [{"k": k} for k, r in rows.items() if r.delete]
            if deletes:
                self.cur.executemany(f"DELETE FROM {table} WHERE {name} = %(k)s", deletes)
            groups: dict[tuple[bool, tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
            for key, r in rows.items():
                if r.insert:
                    shape = (True, tuple(r.values), tuple(sorted(r.changed)))
                    groups.setdefault(shape, []).append(r.values)
                elif r.changed and not r.missing:  # an UPDATE of an absent row is a no-op too
                    columns = tuple(sorted(r.changed))
                    groups.setdefault((False, columns, ()), []).append(
                        {**{c: r.values[c] for c in columns}, "k": key}
                    )
            for (insert, columns, changed), params in groups.items():
                self.cur.executemany(_insert_sql(table, columns, changed) if insert
                                     else _update_sql(table, columns), params)  # fmt: skip

    # ------------------------------------------------------------ raw SQL, in order
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        self.flush()
        self.writing()
        return self.cur.execute(sql, params)

    def fetchone(self) -> dict[str, Any] | None:
        return self.cur.fetchone()

    def fetchall(self) -> list[dict[str, Any]]:
        return self.cur.fetchall()


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], changed: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    marks = ", ".join(f"%({c})s" for c in columns)
    if changed:
        sets = ", ".join(f"{c} = excluded.{c}" for c in changed)
        conflict = f"DO UPDATE SET {sets}"
    else:
        conflict = "DO NOTHING"
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({key_of(table)}) {conflict}"


@functools.lru_cache(maxsize=256)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = %({c})s" for c in columns)
    return f"UPDATE {table} SET {sets} WHERE {key_of(table)} = %(k)s"
