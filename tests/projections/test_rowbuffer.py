"""The batch row buffer leaves exactly the rows the statements it replaces would leave.

Random sequences of inserts (ON CONFLICT DO NOTHING), updates, deletes, reads and raw
set-based statements run twice: once as plain SQL, statement by statement, on one table,
and once through `Rows` on an identical table. Every read must agree when it is made, and
the tables must be equal at the end, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from projections.db import PostgresViews, SQLiteViews, ViewDatabase
from projections.rowbuffer import Rows

DDL = "CREATE TABLE {t} (id TEXT PRIMARY KEY, grp TEXT NOT NULL, n BIGINT NOT NULL, note TEXT)"
KEYS = [f"r{i}" for i in range(8)]  # few keys: operations pile up on the same rows


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator[ViewDatabase]:
    if request.param == "sqlite":
        views: ViewDatabase = SQLiteViews(tmp_path / "rows.db")
    else:
        from tests.support.api import PG_URL

        schema = request.getfixturevalue("pg_schema")
        import psycopg

        from api.config import parse_database_url

        conninfo = parse_database_url(PG_URL, tmp_path, None).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        views = PostgresViews(conninfo, schema)
    yield views
    views.close()


def table(db: ViewDatabase, name: str) -> list[dict]:
    return db.query(f"SELECT * FROM {name} ORDER BY id")


def random_row(rng: random.Random) -> dict:
    return {"id": rng.choice(KEYS), "grp": rng.choice("ab"), "n": rng.randint(0, 9), "note": None}


@pytest.mark.parametrize("seed", range(20))
def test_buffered_writes_equal_statement_by_statement(db: ViewDatabase, seed: int):
    rng = random.Random(seed)
    existing = rng.sample(KEYS, 3)  # some rows exist before the first batch
    with db.transaction() as cur:
        for name in ("plain", "buffered"):
            cur.execute(DDL.format(t=name))
            for key in existing:
                cur.execute(f"INSERT INTO {name} VALUES (%(k)s, 'a', 1, 'old')", {"k": key})
    for _batch in range(6):
        with db.transaction() as cur:
            rows = Rows(cur)
            for _ in range(rng.randint(1, 25)):
                op, key = rng.random(), rng.choice(KEYS)
                if op < 0.3:
                    row = random_row(rng)
                    cur.execute("SELECT id FROM plain WHERE id = %(id)s", row)
                    new = cur.fetchone() is None and rng.random() < 0.5  # a creation: key unused
                    cur.execute(
                        "INSERT INTO plain VALUES (%(id)s, %(grp)s, %(n)s, %(note)s) "
                        "ON CONFLICT (id) DO NOTHING",
                        row,
                    )
                    rows.insert("buffered", row, new=new)
                elif op < 0.6:
                    values = {"n": rng.randint(0, 99), "note": rng.choice([None, "x", "y"])}
                    values = dict(rng.sample(sorted(values.items()), rng.randint(1, 2)))
                    sets = ", ".join(f"{c} = %({c})s" for c in values)
                    cur.execute(f"UPDATE plain SET {sets} WHERE id = %(k)s", {**values, "k": key})
                    rows.update("buffered", key, values)
                elif op < 0.72:
                    cur.execute("DELETE FROM plain WHERE id = %(k)s", {"k": key})
                    rows.delete("buffered", key)
                elif op < 0.92:
                    cur.execute("SELECT * FROM plain WHERE id = %(k)s", {"k": key})
                    expected = cur.fetchone()
                    assert rows.get("buffered", key) == expected, f"read of {key} disagrees"
                else:  # set-based SQL sees every buffered change first
                    cur.execute("UPDATE plain SET n = n + 1 WHERE grp = 'a'")
                    rows.execute("UPDATE buffered SET n = n + 1 WHERE grp = 'a'")
            rows.flush()
        assert table(db, "buffered") == table(db, "plain")


def test_a_batch_of_one_row_is_written_in_one_statement(tmp_path):
    db = SQLiteViews(tmp_path / "rows.db")
    with db.transaction() as cur:
        cur.execute(DDL.format(t="buffered"))
    statements: list[str] = []

    class Counting:
        def __init__(self, cur):
            self.cur = cur

        def executemany(self, sql, params):
            statements.append(sql)
            return self.cur.executemany(sql, params)

    with db.transaction() as cur:
        rows = Rows(Counting(cur))  # type: ignore[arg-type]
        rows.insert("buffered", {"id": "r1", "grp": "a", "n": 0, "note": None})
        for n in range(1, 50):
            rows.update("buffered", "r1", {"n": n})
        rows.flush()
    assert len(statements) == 1 and statements[0].startswith("INSERT")
    assert table(db, "buffered") == [{"id": "r1", "grp": "a", "n": 49, "note": None}]
    db.close()
