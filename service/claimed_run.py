"""One claimed task as the worker holds it: appends at the held version, a heartbeat that
renews the lease, stop requests polled between batches, and the fence that ends a run the
moment another writer moved its stream or the store stopped answering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import IntegrityError, PersistenceError

from domain.application import Snapledger
from domain.drill import Drill
from domain.restore import Restore
from domain.snapshot import DELETED, RUNNING, Snapshot
from transfer.errors import Stopped

log = logging.getLogger("snapledger.worker")


class Fenced(Exception):
    """Someone else changed the task in a way this worker must not overwrite."""


class StoreUnavailable(Fenced):
    """An append to the event store failed without an answer (database down, no
    connection). The events it carried are gone from the aggregate while its version moved
    on, so this worker must not append again: any later event would leave a gap in the
    stream. It abandons the run; once the lease lapses the run is claimed again."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class ClaimedRun:
    """One claimed task: appends at the held version, renews the lease, polls for stops."""

    def __init__(
        self, app: Snapledger, agg: Snapshot | Restore | Drill, load: Callable[[], Any], poll: float
    ) -> None:
        self.app = app
        self.agg = agg
        self.attempt = agg.attempt
        self.load = load
        self.poll = poll
        self.beat_every = max(agg.lease_seconds / 3, 0.2)
        self.last_append = time.monotonic()
        self.next_check = 0.0
        self.stop_seen = False
        self.poison: Exception | None = None  # why an append failed before reaching the store
        self.fenced: Fenced | None = None
        self.lock = threading.Lock()
        self._done = threading.Event()
        self._beats = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> ClaimedRun:
        self._beats.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._beats.join(timeout=10)

    def _beat(self) -> None:
        """Renews the lease while the process lives, even in a step that reports nothing
        for long (index builds, a slow COPY, a large upload's last part)."""
        while not self._done.wait(self.beat_every / 2):
            with self.lock:
                if self._done.is_set() or time.monotonic() - self.last_append < self.beat_every:
                    continue
                try:
                    self.agg.heartbeat()
                    self.append()
                except Stopped:
                    pass  # should_stop() reports it to the pipeline
                except Fenced as e:
                    self.fenced = e
                    return
                except Exception:  # noqa: BLE001 - a lost heartbeat only shortens the lease
                    log.exception("heartbeat failed")

    def _fresh(self) -> Any:
        """Re-reads the run; raises Fenced if another attempt took it over."""
        fresh = self.load()
        if fresh.attempt != self.attempt:
            raise Fenced(f"{fresh.kind} {fresh.sub_name} was claimed again (attempt {fresh.attempt})")
        return fresh

    def append(self) -> None:
        if isinstance(self.fenced, StoreUnavailable):
            raise self.fenced  # an earlier append was lost: never write after a gap
        if self.poison is not None:
            raise RuntimeError("an earlier event of this run could not be written; nothing more is")
        try:
            self.app.record(self.agg)
        except PersistenceError as e:
            if isinstance(e, IntegrityError):
                self._conflict()
            self.fenced = StoreUnavailable(f"event store unavailable ({type(e).__name__}: {e})")
            raise self.fenced from None
        except Exception as e:
            # The event could not be written (it failed to encode): the aggregate's version
            # moved past it, so this copy must never append again (a gap no replay survives).
            self.poison = self.poison or e
            raise
        self.last_append = time.monotonic()

    def _conflict(self) -> None:
        """Another writer appended first: a stop or delete is honoured, anything else fences."""
        fresh = self._fresh()
        if fresh.status == DELETED or fresh.stop_requested:
            self.agg = fresh
            self.stop_seen = True
            raise Stopped from None
        raise Fenced(f"{fresh.kind} {fresh.sub_name} changed under this worker") from None

    def report(self, items: int, bytes_: int, percent: float, collection: str | None) -> None:
        with self.lock:
            self.agg.progress(items, bytes_, percent, collection, utc_now())
            self.append()

    def planned(self, facts: dict[str, Any]) -> None:
        """A restore's plan, appended (fenced like any append) before it writes to the target."""
        with self.lock:
            self.agg.planned(facts)  # type: ignore[union-attr]
            self.append()

    def still_ours(self) -> None:
        """Right before a commit that others would see: re-read the run now (not at the next
        poll), so an attempt that was claimed again meanwhile raises Fenced, and a stop is
        honoured."""
        with self.lock:
            if self.fenced is not None:
                raise self.fenced
            try:
                fresh = self._fresh()
            except PersistenceError as e:
                self.fenced = StoreUnavailable(f"event store unavailable ({type(e).__name__}: {e})")
                raise self.fenced from None
            if fresh.status == DELETED or fresh.stop_requested:
                self.agg = fresh
                self.stop_seen = True
                raise Stopped

    def should_stop(self) -> bool:
        with self.lock:
            now = time.monotonic()
            if self.fenced is not None:
                raise self.fenced
            if self.stop_seen:
                return True
            if now < self.next_check:
                return False
            self.next_check = now + self.poll
            try:
                fresh = self._fresh()
            except PersistenceError as e:  # the database is away: not the run's fault
                self.fenced = StoreUnavailable(f"event store unavailable ({type(e).__name__}: {e})")
                raise self.fenced from None
            if fresh.version != self.agg.version and (fresh.status == DELETED or fresh.stop_requested):
                self.agg = fresh
                self.stop_seen = True
            return self.stop_seen

    def finish_stopped(self) -> None:
        if self.agg.status == RUNNING:
            self.agg.acknowledge_stop(utc_now())
            self.app.record(self.agg)
