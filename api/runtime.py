"""Wires configuration into running parts: application, views, runner, worker."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.availability import DatabaseWatch, steady_reconnects
from api.config import EXISTING, Config, ConfigError, check_s3_credentials
from api.pagecache import PageCache
from domain.application import Snapledger
from domain.errors import NotFound
from domain.ledger import Catalog, Outcome
from projections import queries
from projections.db import PostgresViews, SQLiteViews, ViewDatabase
from projections.eventlog import EventLog
from projections.runner import ProjectionRunner
from service import catalog, deletion, retention
from service.janitor import Janitor
from service.maintenance import Maintenance
from service.resources import Resources
from service.scheduler import Scheduler
from service.sync import SyncReport
from service.worker import Work, Worker
from transfer.sources.registry import build_source, build_target
from transfer.storage import LocalStorage, S3Storage, Storage
from transfer.storage.health import HealthBoard

log = logging.getLogger("snapledger.runtime")


CACHE = {
    # Commands re-read a policy's whole history otherwise; fast-forwarding a cached
    # aggregate reads only newer events, so other processes' writes are still seen.
    "AGGREGATE_CACHE_MAXSIZE": "1000",
    "AGGREGATE_CACHE_FASTFORWARD": "y",
}


def _event_store_env(config: Config) -> dict[str, str]:
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


def build_storage(spec: Any) -> Storage:
    if spec.kind == "s3":
        return S3Storage(
            spec.name,
            spec.bucket,
            spec.prefix,
            spec.endpoint_url,
            spec.region,
            part_size=spec.part_size,
            concurrency=spec.concurrency,
            path_style=spec.path_style,
            lock_mode=spec.object_lock,
            lock_days=spec.object_lock_days,
        )
    return LocalStorage(spec.name, spec.path)


@contextmanager
def _startup_lock(config: Config) -> Iterator[None]:
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


def open_store(config: Config) -> tuple[Snapledger, ViewDatabase]:
    """The event store and the record views: all a projection replay needs."""
    catalog = Catalog(
        sources=frozenset(config.sources),
        storages=frozenset(config.storages),
        targets=frozenset(config.targets),
        existing_choices={n: EXISTING.get(t.kind, ()) for n, t in config.targets.items()},
    )
    if config.database.kind == "postgresql":
        _ensure_schema(config)
    app = Snapledger(_event_store_env(config), catalog)
    _check_event_key(app, config)
    if config.database.kind == "sqlite":
        assert config.database.path is not None
        path = config.database.path
        views: ViewDatabase = SQLiteViews(path.with_name(path.stem + "-views.db"))
    else:
        views = PostgresViews(config.database.conninfo(), config.database.schema)
    return app, views


@dataclass
class Runtime:
    config: Config
    app: Snapledger
    views: ViewDatabase
    runner: ProjectionRunner
    eventlog: EventLog
    resources: Resources
    worker: Worker | None = None
    scheduler: Scheduler | None = None
    janitor: Janitor | None = None
    _maintenance: Maintenance | None = None
    pages: PageCache = field(init=False)

    def __post_init__(self) -> None:
        self.pages = PageCache(self.views)
        self.runner.on_advance.append(self.pages.views_moved)

    _closing: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)  # serve got SIGTERM/SIGINT
    watch: DatabaseWatch = field(default_factory=lambda: DatabaseWatch(None))  # is PostgreSQL answering?

    @classmethod
    def build(cls, config: Config) -> Runtime:
        check_s3_credentials(config)
        with _startup_lock(config):  # any number of processes may start at once on a fresh database
            app, views = open_store(config)
            runner = ProjectionRunner(app, views)
        resources = Resources(
            sources={n: build_source(s) for n, s in config.sources.items()},
            targets={n: build_target(t) for n, t in config.targets.items()},
            storages={n: build_storage(s) for n, s in config.storages.items()},
            secrets=list(config.secrets),
            codec=config.codec,
            level=config.level,
            keyrings={n: s.keyring for n, s in config.storages.items() if s.keyring is not None},
            signers={n: s.signer for n, s in config.storages.items() if s.signer is not None},
        )
        resources.health = HealthBoard(resources.storages)
        return cls(config, app, views, runner, EventLog(app), resources)

    # The read side's questions, as callbacks for the worker, scheduler and janitor.
    def find_work(self, now: datetime | None = None) -> list[Work]:
        return queries.due_runs(self.views, now or datetime.now(UTC))

    def in_flight(self) -> list[dict[str, Any]]:
        return queries.runs_in_flight(self.views)

    def due_policies(self, now: datetime) -> list[dict[str, Any]]:
        return queries.policies_due(self.views, now)

    def retained(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        return queries.retained_snapshots(self.views)

    def start(self, worker: bool = True, standby_views: bool = False) -> Runtime:
        """`standby_views`: a worker process, whose runner applies events only while no
        other worker process does (see ProjectionRunner.start)."""
        if self.config.database.kind == "postgresql":
            steady_reconnects()
            self.watch = DatabaseWatch(self.config.database.conninfo()).start()
        self.runner.start(standby=standby_views)
        settings = self.config.worker_settings
        if worker:
            self.worker = Worker(
                self.app,
                self.resources,
                self.find_work,
                lease_seconds=settings["lease_seconds"],
                concurrency=settings["concurrency"],
            ).start()
        if settings["scheduler"]:
            self.scheduler = Scheduler(self.app, self.due_policies)
            self.janitor = Janitor(
                self.app, self.resources.storages, self.retained, self.in_flight, self.resources.targets
            )
            assert self.resources.health is not None  # build() gives every runtime its board
            intervals = {n: s.sync_interval for n, s in self.config.storages.items() if s.sync_interval}
            self._maintenance = Maintenance(
                self.scheduler, self.janitor, self.resources.health, settings, intervals,
                self.sync_storage, self.nudge_worker,
            ).start()  # fmt: skip
        return self

    def storages_status(self) -> list[dict[str, Any]]:
        """Configured locations (no credentials, no keys) with their last health check."""
        out = []
        assert self.resources.health is not None  # build() gives every runtime its board
        for name, spec in sorted(self.config.storages.items()):
            storage = self.resources.storages[name]
            health = self.resources.health.last(name)
            out.append(
                {
                    "name": name,
                    "kind": spec.kind,
                    "where": storage.describe(),
                    "object_lock": spec.object_lock,
                    "encrypted": spec.keyring is not None,
                    "sync_interval_seconds": spec.sync_interval,
                    "health": health.as_dict() if health else None,
                }
            )
        return out

    # Use cases that also move or remove data: service/, given this process's parts.
    def delete_policy(self, policy_id: str, keep_files: bool, actor: str, dry_run: bool = False) -> Outcome:
        return deletion.delete_policy(
            self.app, self.resources.storages, policy_id, keep_files, actor, dry_run
        )

    def delete_snapshot(self, snapshot_id: str, actor: str, dry_run: bool = False) -> Outcome:
        return deletion.delete_snapshot(self.app, self.resources.storages, snapshot_id, actor, dry_run)

    def retention_pass(self, dry_run: bool = False) -> Outcome:
        janitor = self.janitor or Janitor(self.app, self.resources.storages, self.retained)
        return retention.retention_pass(self.app, janitor, self.wait, dry_run)

    def storage(self, name: str) -> Storage:
        storage = self.resources.storages.get(name)
        if storage is None:
            known = ", ".join(sorted(self.resources.storages)) or "none"
            raise NotFound(f"unknown storage location {name!r} (configured: {known})", "storage")
        return storage

    def sync_storage(self, name: str, actor: str, dry_run: bool = False) -> SyncReport:
        signer, keyring = self.resources.signers.get(name), self.resources.keyrings.get(name)
        return catalog.sync_location(
            self.app, self.views, self.storage(name), actor, self.wait, dry_run, signer, keyring
        )

    def wait(self, position: int) -> bool:
        return self.runner.wait(position, self.config.wait_seconds)

    def nudge_worker(self) -> None:
        if self.worker is not None:
            self.worker.nudge()

    def close(self) -> None:
        self._closing.set()
        self.watch.stop()
        if self._maintenance is not None:
            self._maintenance.stop()
        if self.worker is not None:
            self.worker.stop()
        self.runner.stop()
        self.views.close()
        self.app.close()
