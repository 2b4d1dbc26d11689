"""Wires configuration into running parts: application, views, runner, worker."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.availability import DatabaseWatch, steady_reconnects
from api.config import Config, check_s3_credentials
from api.pagecache import PageCache
from api.store import open_store, startup_lock
from domain.application import Snapledger
from domain.errors import NotFound
from domain.ledger import Outcome
from projections import queries
from projections.db import ViewDatabase
from projections.eventlog import EventLog
from projections.runner import ProjectionRunner
from service import catalog, deletion, retention
from service.capture_loop import CAPTURED_KINDS, CaptureLoop
from service.janitor import Janitor
from service.maintenance import Maintenance
from service.resources import Resources
from service.scheduler import Scheduler
from service.sync import SyncReport
from service.worker import Work, Worker
from transfer.sources.registry import build_source, build_target
from transfer.storage import Storage
from transfer.storage.health import HealthBoard
from transfer.storage.registry import build_storage

log = logging.getLogger("snapledger.runtime")


@dataclass
class Runtime:
    config: Config
    app: Snapledger
    views: ViewDatabase
    runner: ProjectionRunner
    eventlog: EventLog
    resources: Resources
    worker: Worker | None = None
    captures: CaptureLoop | None = None  # continuous capture, where workers run
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
        with startup_lock(config):  # any number of processes may start at once on a fresh database
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

    def due_drills(self, now: datetime) -> list[dict[str, Any]]:
        return queries.drills_due(self.views, now)

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
            if any(s.kind in CAPTURED_KINDS for s in self.config.sources.values()):  # WAL or oplog
                self.captures = CaptureLoop(
                    self.app,
                    self.resources,
                    lambda: queries.capture_windows(self.views),
                    worker_id=self.worker.worker_id,
                ).start()
        if settings["scheduler"]:
            self.scheduler = Scheduler(self.app, self.due_policies, self.due_drills)
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
        if self.captures is not None:
            self.captures.stop()
        self.runner.stop()
        self.views.close()
        self.app.close()
