"""Real PostgreSQL databases for the fidelity tests, and the ways to compare two of them."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from api.config import parse_database_url
from tests.support.api import PG_URL

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pg_everything.sql"
SCHEMAS = ["shop", "Odd Schema"]


def url(dbname: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + dbname


def conninfo(dbname: str) -> str:
    return parse_database_url(url(dbname), Path("."), None).conninfo()


def connect(dbname: str, **kw) -> psycopg.Connection:
    return psycopg.connect(conninfo(dbname), autocommit=True, **kw)


def admin() -> psycopg.Connection:
    return psycopg.connect(parse_database_url(PG_URL, Path("."), None).conninfo(), autocommit=True)


@contextmanager
def databases(*prefixes: str) -> Iterator[list[str]]:
    names = [f"sl_{p}_{uuid.uuid4().hex[:8]}" for p in prefixes]
    with admin() as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield names
    finally:
        with admin() as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def load_fixture(dbname: str) -> None:
    with connect(dbname) as conn:
        conn.execute(FIXTURE.read_text())


def schema_dump(dbname: str, schemas: list[str] = SCHEMAS) -> list[str]:
    """pg_dump --schema-only, without what differs between any two dumps (the random
    \\restrict key pg_dump 15.14+ writes)."""
    args = ["pg_dump", "--schema-only", "--no-owner", "-d", conninfo(dbname)]
    for schema in schemas:
        args += ["-n", '"' + schema + '"']
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not re.match(r"^\\(un)?restrict ", line)]


def tables(dbname: str, schemas: list[str] = SCHEMAS) -> list[tuple[str, str]]:
    with connect(dbname) as conn:
        return conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname = ANY(%s) ORDER BY 1, 2""",
            (schemas,),
        ).fetchall()


def checksums(dbname: str, schemas: list[str] = SCHEMAS) -> dict[str, tuple[int, str]]:
    """Per table: row count and an order-independent digest of its rows' text."""
    with connect(dbname) as conn:
        return checksums_of(conn, schemas)


def checksums_of(conn: psycopg.Connection, schemas: list[str] = SCHEMAS) -> dict[str, tuple[int, str]]:
    found = {}
    names = conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname = ANY(%s) ORDER BY 1, 2""",
        (schemas,),
    ).fetchall()
    for schema, table in names:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') FROM "
                "(SELECT md5(t::text) AS h FROM {} t) x"
            ).format(sql.Identifier(schema, table))
        ).fetchone()
        found[f"{schema}.{table}"] = (row[0], row[1])
    return found


def sequences(dbname: str, schemas: list[str] = SCHEMAS) -> dict[str, tuple[int, bool]]:
    found = {}
    with connect(dbname) as conn:
        names = conn.execute(
            "SELECT schemaname, sequencename FROM pg_sequences WHERE schemaname = ANY(%s) ORDER BY 1, 2",
            (schemas,),
        ).fetchall()
        for schema, name in names:
            found[f"{schema}.{name}"] = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
            ).fetchone()
    return found


def user_objects(dbname: str) -> list[str]:
    """Everything a restore could have created, outside the system schemas."""
    with connect(dbname) as conn:
        rels = conn.execute(
            """SELECT n.nspname || '.' || c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1"""
        ).fetchall()
        types = conn.execute(
            """SELECT n.nspname || '.' || t.typname FROM pg_type t
               JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND t.typrelid = 0
                 AND t.typelem = 0 ORDER BY 1"""
        ).fetchall()
        procs = conn.execute(
            """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"""
        ).fetchall()
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname NOT IN "
            "('information_schema', 'public') ORDER BY 1"
        ).fetchall()
        exts = conn.execute(
            "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"
        ).fetchall()
    return (
        [f"schema {r[0]}" for r in schemas]
        + [f"extension {r[0]}" for r in exts]
        + [r[0] for r in rels + types + procs]
    )
