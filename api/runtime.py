"""Wires configuration into running parts: application, views, runner, worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from api.config import EXISTING, Config, ConfigError, check_s3_credentials
from domain.application import Catalog, Snapledger
from projections.db import PostgresViews, SQLiteViews, ViewDatabase
from projections.eventlog import EventLog
from projections.runner import ProjectionRunner
from transfer.kinds import build_source, build_target
from transfer.storage import LocalStorage, S3Storage, Storage
from transfer.worker import Resources, Work, Worker


def _event_store_env(config: Config) -> dict[str, str]:
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
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": db.dbname,
        "POSTGRES_HOST": db.host,
        "POSTGRES_PORT": str(db.port),
        "POSTGRES_USER": db.user,
        "POSTGRES_PASSWORD": db.password(),
        "POSTGRES_SCHEMA": db.schema,
        "POSTGRES_CONNECT_TIMEOUT": "10",
    }


def _ensure_schema(config: Config) -> None:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(config.database.conninfo(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(config.database.schema))
            )
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
        )
    return LocalStorage(spec.name, spec.path)


@dataclass
class Runtime:
    config: Config
    app: Snapledger
    views: ViewDatabase
    runner: ProjectionRunner
    eventlog: EventLog
    resources: Resources
    worker: Worker | None = None

    @classmethod
    def build(cls, config: Config) -> Runtime:
        check_s3_credentials(config)
        catalog = Catalog(
            sources=frozenset(config.sources),
            storages=frozenset(config.storages),
            targets=frozenset(config.targets),
            existing_choices={n: EXISTING.get(t.kind, ()) for n, t in config.targets.items()},
        )
        if config.database.kind == "postgresql":
            _ensure_schema(config)
        app = Snapledger(_event_store_env(config), catalog)
        if config.database.kind == "sqlite":
            assert config.database.path is not None
            path = config.database.path
            views: ViewDatabase = SQLiteViews(path.with_name(path.stem + "-views.db"))
        else:
            views = PostgresViews(config.database.conninfo(), config.database.schema)
        runner = ProjectionRunner(app, views)
        resources = Resources(
            sources={n: build_source(s) for n, s in config.sources.items()},
            targets={n: build_target(t) for n, t in config.targets.items()},
            storages={n: build_storage(s) for n, s in config.storages.items()},
            secrets=list(config.secrets),
            codec=config.codec,
            level=config.level,
        )
        return cls(config, app, views, runner, EventLog(app), resources)

    def find_work(self) -> list[Work]:
        """Requested runs, oldest first, read from the record views."""
        rows = self.views.query(
            "SELECT 'snapshot' AS kind, id, created_at FROM backup_records "
            "WHERE status = 'requested' AND stop_requested = 0 "
            "UNION ALL SELECT 'restore' AS kind, id, created_at FROM restore_records "
            "WHERE status = 'requested' AND stop_requested = 0 ORDER BY created_at LIMIT 20"
        )
        return [(r["kind"], UUID(r["id"])) for r in rows]

    def start(self, worker: bool = True) -> Runtime:
        self.runner.start()
        if worker:
            self.worker = Worker(self.app, self.resources, self.find_work).start()
        return self

    def wait(self, position: int) -> bool:
        return self.runner.wait(position, self.config.wait_seconds)

    def nudge_worker(self) -> None:
        if self.worker is not None:
            self.worker.nudge()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.runner.stop()
        self.views.close()
        self.app.close()
