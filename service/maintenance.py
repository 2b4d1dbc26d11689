"""The maintenance loop every process may run: the scheduler every few seconds, retention,
storage health and periodic catalog syncs on their own intervals. One pass failing is
logged and retried at the next; it never ends the loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.janitor import Janitor
from service.scheduler import Scheduler
from service.sync import SYNC_ACTOR, SyncReport
from transfer.storage import StorageError
from transfer.storage.health import HealthBoard

log = logging.getLogger("snapledger.maintenance")


class Maintenance:
    def __init__(
        self, scheduler: Scheduler, janitor: Janitor, health: HealthBoard, settings: dict[str, Any],
        sync_intervals: dict[str, float], sync: Callable[[str, str], SyncReport], nudge: Callable[[], None],
    ) -> None:  # fmt: skip
        self.scheduler, self.janitor, self.health = scheduler, janitor, health
        self.settings = settings
        self.sync_intervals = sync_intervals  # location -> seconds, for those that sync on their own
        self.sync, self.nudge = sync, nudge
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> Maintenance:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        due = {"retention": 0.0, "health": 0.0, **{f"sync:{n}": 0.0 for n in self.sync_intervals}}
        while not self._closing.wait(self.settings["scheduler_interval"]):
            try:
                if self.scheduler.tick(datetime.now(UTC)):
                    self.nudge()
                now = time.monotonic()
                if now >= due["retention"]:
                    self.janitor.tick(datetime.now(UTC))
                    due["retention"] = now + self.settings["retention_interval"]
                if now >= due["health"]:
                    self.health.check_all()
                    due["health"] = now + self.settings["health_interval"]
                for key in [k for k, at in due.items() if k.startswith("sync:") and now >= at]:
                    name = key.removeprefix("sync:")
                    self._periodic_sync(name)
                    due[key] = now + self.sync_intervals[name]
            except Exception:
                log.exception("maintenance pass failed; retrying")

    def _periodic_sync(self, name: str) -> None:
        try:
            report = self.sync(name, SYNC_ACTOR)
        except StorageError as e:
            log.warning("sync of %s failed: %s", name, e)
            return
        if report.imported or report.invalid or report.changed:
            log.info(
                "sync of %s: %d imported, %d invalid, %d changed",
                name, len(report.imported), len(report.invalid), len(report.changed),
            )  # fmt: skip
