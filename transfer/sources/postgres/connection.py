"""Connecting to PostgreSQL the way libpq reads a URL, with the password from the
environment and errors that name the source or target, never the password.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import psycopg

from transfer.errors import SourceError, TargetError

log = logging.getLogger("snapledger.postgres")

CHUNK = 1 << 20


def scalar(cur: psycopg.Cursor[Any]) -> Any:
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


def connect(
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
