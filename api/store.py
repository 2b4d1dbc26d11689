"""Opening the event store and the record views from configuration: the library's
environment (PostgreSQL or SQLite, the aggregate cache, the cipher), the schema, the
check that the events' key is the one they were sealed with, and the start-up lock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from api.config import Config, ConfigError
from domain.application import Snapledger
from domain.ledger import Catalog
from projections.db import PostgresViews, SQLiteViews, ViewDatabase
from transfer.sources.registry import EXISTING

CACHE = {
    # Commands re-read a policy's whole history otherwise; fast-forwarding a cached
    # aggregate reads only newer events, so other processes' writes are still seen.
    "AGGREGATE_CACHE_MAXSIZE": "1000",
    "AGGREGATE_CACHE_FASTFORWARD": "y",
}


def event_store_env(config: Config) -> dict[str, str]:
    return {**_store_env(config), **CACHE, **_cipher_env(config)}


def _cipher_env(config: Config) -> dict[str, str]:
    """The library's own cipher: each event's state is sealed with AES-GCM at rest."""
    key = config.database.cipher_key
    if key is None:
        return {}
    return {
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": base64.b64encode(key).decode(),
    }


def _check_event_key(app: Snapledger, config: Config) -> None:
    """A key that does not read the stored events (or a missing one) stops startup with a
    clear message, instead of failing every replay later."""
    from eventsourcing.persistence import MapperDeserialisationError

    first = app.recorder.select_notifications(start=None, limit=1)
    if not first:
        return
    try:
        app.mapper.to_domain_event(first[0])
    except MapperDeserialisationError:
        app.close()
        if config.database.cipher_key is None:
            raise ConfigError(
                "the event store's events cannot be read: they are encrypted, so set "
                "database.encryption_key_env to the key they were written with"
            ) from None
        raise ConfigError(
            "database.encryption_key_env: the event store's events cannot be decrypted with this "
            "key (they were written with another key, or without encryption)"
        ) from None


def _store_env(config: Config) -> dict[str, str]:
    db = config.database
    if db.kind == "sqlite":
        assert db.path is not None
        db.path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(db.path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {
        "PERSISTENCE_MODULE": "api.event_store:PostgresWithParameters",
        "SNAPLEDGER_POSTGRES_PARAMETERS": json.dumps(db.parameters),
        "POSTGRES_DBNAME": db.dbname,
        "POSTGRES_HOST": db.host,
        "POSTGRES_PORT": str(db.port),
        "POSTGRES_USER": db.user,
        "POSTGRES_PASSWORD": db.password(),
        "POSTGRES_SCHEMA": db.schema,
        "POSTGRES_CONNECT_TIMEOUT": "3",  # also how long a request waits for a pooled connection
        "POSTGRES_PRE_PING": "y",  # survive a database restart without failing the next command
    }


def _ensure_schema(config: Config) -> None:
    from psycopg import sql

    with _connect(config) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(config.database.schema)))


def _connect(config: Config) -> Any:
    """An autocommit connection to the event store's database; one that fails stops
    start-up naming the server, never with a traceback."""
    import psycopg

    try:
        return psycopg.connect(config.database.conninfo(), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        db = config.database
        raise ConfigError(
            f"cannot connect to PostgreSQL at {db.host}:{db.port}/{db.dbname} as {db.user}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


@contextmanager
def startup_lock(config: Config) -> Iterator[None]:
    """Creating the schema, the event tables and the views is idempotent for one process
    (IF NOT EXISTS), not for several at once: PostgreSQL's catalogs then refuse the second
    CREATE of the same name. One session-level advisory lock per schema takes them in turn."""
    if config.database.kind != "postgresql":
        yield
        return
    conn = _connect(config)
    try:
        key = f"snapledger-startup:{config.database.schema}"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        yield
    finally:
        conn.close()  # ends the session, and with it the lock


def open_store(config: Config, create_tables: bool = True) -> tuple[Snapledger, ViewDatabase]:
    """The event store and the record views: all a projection replay needs. A rebuild's
    children pass create_tables=False: their parent made the tables, and three processes
    running CREATE TABLE IF NOT EXISTS at once can fail ("tuple concurrently updated")."""
    catalog = Catalog(
        sources=frozenset(config.sources),
        storages=frozenset(config.storages),
        targets=frozenset(config.targets),
        existing_choices={n: EXISTING.get(t.kind, ()) for n, t in config.targets.items()},
        source_kinds={n: s.kind for n, s in config.sources.items()},
        target_kinds={n: t.kind for n, t in config.targets.items()},
    )
    if config.database.kind == "postgresql":
        _ensure_schema(config)
    env = event_store_env(config) if create_tables else {**event_store_env(config), "CREATE_TABLE": "n"}
    app = Snapledger(env, catalog)
    _check_event_key(app, config)
    if config.database.kind == "sqlite":
        assert config.database.path is not None
        path = config.database.path
        views: ViewDatabase = SQLiteViews(path.with_name(path.stem + "-views.db"))
    else:
        views = PostgresViews(config.database.conninfo(), config.database.schema)
    return app, views
