"""A PostgreSQL cluster with wal_level = logical, for continuous capture.

The shared cluster (5432) is not restarted to change its wal_level: `.ci/run` creates and
starts a cluster of its own on 5433 (`pg_createcluster 15 logical -p 5433`).
SNAPLEDGER_TEST_LOGICAL_POSTGRES_URL names another one. Outside CI, a missing cluster skips
its tests with the reason; in CI it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from tests.support.api import IN_CI

LOGICAL_URL = os.environ.get(
    "SNAPLEDGER_TEST_LOGICAL_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
)


def url(dbname: str) -> str:
    return LOGICAL_URL.rsplit("/", 1)[0] + "/" + dbname


def unavailable() -> str | None:
    try:
        with psycopg.connect(LOGICAL_URL, connect_timeout=3) as conn:
            level = conn.execute("SHOW wal_level").fetchone()
    except psycopg.OperationalError as e:
        return f"PostgreSQL at {LOGICAL_URL} unreachable: {str(e).splitlines()[0]}"
    if level is None or level[0] != "logical":
        return f"PostgreSQL at {LOGICAL_URL} has wal_level = {level and level[0]}, not logical"
    return None


def require() -> None:
    reason = unavailable()
    if reason:
        if IN_CI:
            pytest.fail(reason + " (CI must run the capture tests: .ci/run starts that cluster)")
        pytest.skip(reason + " (set SNAPLEDGER_TEST_LOGICAL_POSTGRES_URL)")


@contextmanager
def database(prefix: str) -> Iterator[str]:
    """A fresh database on the logical cluster; dropped afterwards with the slots made in it."""
    name = f"sl_{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(LOGICAL_URL, autocommit=True) as conn:
        # FILE_COPY: no copy of the template through the WAL, which the WAL guard tests measure
        conn.execute(sql.SQL("CREATE DATABASE {} STRATEGY = FILE_COPY").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(LOGICAL_URL, autocommit=True) as conn:
            for (slot,) in conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
            ).fetchall():
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
