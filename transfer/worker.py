"""The worker loop: claim a requested snapshot or restore, run it, record the outcome.

A claim is an append at the run's version with a lease; progress and heartbeat events
renew it. A run whose lease lapsed (its worker died or froze) is claimed again by any
worker, which first cleans what the dead attempt left. Every append is made at the
version the worker last saw, so a stop, delete or another worker's claim in between
surfaces as a version conflict: the worker re-reads, and either unwinds (stop/delete) or
abandons the run (fenced). It never overwrites.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError

from domain.application import Snapledger
from domain.errors import InvalidTransition
from domain.restore import Restore
from domain.secrets import redact
from domain.snapshot import DELETED, RUNNING, Snapshot
from transfer.archive import manifest_key
from transfer.crypto import Keyring, Signer
from transfer.errors import Stopped
from transfer.health import HealthBoard
from transfer.pipeline import Expected, remove_archive, run_backup, run_restore
from transfer.ports import Source, Target
from transfer.progress import ProgressThrottle
from transfer.storage import Storage, StorageError

log = logging.getLogger("snapledger.worker")
Work = tuple[str, UUID]  # ("snapshot" | "restore", id)


class Fenced(Exception):
    """Someone else changed the task in a way this worker must not overwrite."""


class StoreUnavailable(Fenced):
    """An append to the event store failed without an answer (database down, no
    connection). The events it carried are gone from the aggregate while its version moved
    on, so this worker must not append again: any later event would leave a gap in the
    stream. It abandons the run; once the lease lapses the run is claimed again."""


@dataclass
class Resources:
    sources: dict[str, Source]
    targets: dict[str, Target]
    storages: dict[str, Storage]
    secrets: list[str] = field(default_factory=list)
    codec: str = "gzip"
    level: int = 6
    keyrings: dict[str, Keyring] = field(default_factory=dict, repr=False)  # per storage location
    signers: dict[str, Signer] = field(default_factory=dict, repr=False)  # per storage location
    health: HealthBoard | None = None

    def usable(self, storage_name: str) -> None:
        """Checks the location before a run, so an unreachable one fails the run at once
        with the reason, rather than leaving it "running" through a retry budget per part."""
        if self.health is None or storage_name not in self.storages:
            return
        health = self.health.check(storage_name)
        if not health.ok:
            raise StorageError(f"storage {storage_name!r} is not usable: {health.error}")

    def redact_all(self, reasons: dict[str, str]) -> dict[str, str]:
        return {name: self.redact(reason) for name, reason in reasons.items()}

    def redact(self, text: str) -> str:
        """Failure reasons become events, which are forever: scrub configured secrets, in
        every spelling they can take (raw, percent-encoded, base64), and make the text
        storable (a lone surrogate from a bad file name would fail the event's encoding)."""
        safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return redact(safe, self.secrets)[:2000]


def _fields(task: Any) -> dict[str, str]:
    """Ids that let an operator find a log line's run (JSON logs carry them as keys)."""
    return {
        "task_name": task.task_name or "",
        f"{task.kind}_id": str(task.id),
        "policy_id": str(task.policy_id),
        "attempt": str(task.attempt),
    }


def _now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """One claimed task: appends at the held version, renews the lease, polls for stops."""

    def __init__(
        self, app: Snapledger, agg: Snapshot | Restore, load: Callable[[], Any], poll: float
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

    def __enter__(self) -> _Run:
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
            self.agg.progress(items, bytes_, percent, collection, _now())
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
            self.agg.acknowledge_stop(_now())
            self.app.record(self.agg)


class Worker:
    def __init__(
        self,
        app: Snapledger,
        resources: Resources,
        find_work: Callable[[], list[Work]],
        worker_id: str | None = None,
        poll_interval: float = 0.2,
        stop_poll: float = 0.25,
        lease_seconds: int = 60,
        concurrency: int = 1,
    ) -> None:
        self.app = app
        self.resources = resources
        self.find_work = find_work
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_interval = poll_interval
        self.stop_poll = stop_poll
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="run")
        self._active: dict[UUID, Future[None]] = {}

    # ---------------------------------------------------------------- loop
    def start(self) -> Worker:
        self._thread = threading.Thread(target=self.run_forever, name="worker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    def nudge(self) -> None:
        self._wake.set()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.claim_pending()
            except Exception:
                log.exception("worker loop error")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def claim_pending(self) -> int:
        """Claims what fits under this worker's concurrency; answers how many it started."""
        self._active = {k: f for k, f in self._active.items() if not f.done()}
        started = 0
        for kind, task_id in self.find_work():
            if self._stop.is_set() or len(self._active) >= self.concurrency:
                break
            if task_id in self._active:
                continue
            task = self.app.claim_run(kind, task_id, self.worker_id, self.lease_seconds, _now())
            if task is None:
                continue  # another worker has it, its slot is busy, or it is no longer due
            run = self.run_snapshot if kind == "snapshot" else self.run_restore
            future = self._active[task_id] = self._pool.submit(self._guarded, run, task)
            # Its slot is free once it is done: claim the next task then, not at the next poll
            # (a callback, not the run's last line, so the loop sees the future done).
            future.add_done_callback(lambda _: self._wake.set())
            started += 1
        return started

    @staticmethod
    def _guarded(run: Callable[[Any], None], task: Any) -> None:
        try:
            run(task)
        except Exception:
            log.exception("run of %s %s crashed", task.kind, task.id, extra=_fields(task))

    def _execute(
        self, run: _Run, work: Callable[[_Run], Callable[[], None]], cleanup: Callable[[], None]
    ) -> None:
        if run.agg.stop_requested or run.agg.status == DELETED:
            cleanup()  # a re-claimed run that was asked to stop while its worker was gone
            run.finish_stopped()
            return
        try:
            with run:
                finish = work(run)
            if run.fenced is not None:
                raise run.fenced
            try:
                finish()
                run.app.record(run.agg)
            except PersistenceError as e:
                if not isinstance(e, IntegrityError):
                    raise StoreUnavailable(f"event store unavailable at completion ({e})") from None
                fresh = run._fresh()
                if fresh.status == DELETED or fresh.stop_requested:
                    cleanup()
                    run.agg = fresh
                    run.finish_stopped()
                    return
                raise Fenced("task changed under this worker at completion") from None
        except Stopped:
            cleanup()
            run.finish_stopped()
        except Fenced as e:
            log.warning("abandoning run: %s", e, extra=_fields(run.agg))
        except Exception as e:  # the reason goes into an event: no secrets, no traces
            log.exception("run failed", extra=_fields(run.agg))
            # The first event that could not be written says why, whichever thread (a
            # heartbeat, another collection) ran into the poisoned copy next.
            cause = run.poison or e
            reason = self.resources.redact(
                f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            )
            try:
                if run.poison is not None:  # this copy skipped a version: fail the stored run instead
                    raise InvalidTransition("the run's copy is behind its stream")
                run.agg.fail(reason, _now())
                run.app.record(run.agg)
            except (IntegrityError, InvalidTransition):
                try:
                    fresh = run._fresh()
                except Fenced:
                    return
                if fresh.status == RUNNING:
                    fresh.fail(reason, _now())
                    run.app.record(fresh)

    def run_snapshot(self, snap: Snapshot) -> None:
        run = _Run(self.app, snap, lambda: self.app.get_snapshot(snap.id), self.stop_poll)
        storage = self.resources.storages.get(snap.storage)
        if snap.attempt > 1 and storage is not None:
            storage.cleanup_partials(snap.archive_key)  # what the dead attempt left
            storage.cleanup_partials(manifest_key(snap.archive_key))

        def work(run: _Run) -> Callable[[], None]:
            source = self.resources.sources.get(snap.source)
            if source is None or storage is None:
                missing = snap.source if source is None else snap.storage
                raise LookupError(f"{missing!r} is no longer configured")
            self.resources.usable(snap.storage)
            result = run_backup(
                source,
                storage,
                snap.archive_key,
                list(snap.collections.get("include", [])),
                list(snap.collections.get("exclude", [])),
                {
                    "snapshot_id": str(snap.id),
                    "policy": snap.policy_name,
                    "source": snap.source,
                    "expire_after_seconds": snap.expire_after_seconds,  # a resync keeps the expiry
                },
                ProgressThrottle(run.report),
                run.should_stop,
                codec=self.resources.codec,
                level=self.resources.level,
                parallel=source.parallel,
                keyring=self.resources.keyrings.get(snap.storage),
                signer=self.resources.signers.get(snap.storage),
                before_commit=run.still_ours,
            )

            finished_at = _now()
            locked_until = self._lock_archive(storage, snap, finished_at) if storage.lock_mode else None

            def finish() -> None:
                assert isinstance(run.agg, Snapshot)  # this run loads its snapshot, nothing else
                run.agg.complete(
                    result.items,
                    result.bytes,
                    result.collections,
                    result.sha256,
                    finished_at,
                    locked_until,
                    self.resources.redact_all(result.failed),
                    result.seal,
                )

            return finish

        def cleanup() -> None:
            if storage is not None:
                remove_archive(storage, snap.archive_key)

        self._execute(run, work, cleanup)

    @staticmethod
    def _lock_archive(storage: Storage, snap: Snapshot, finished_at: datetime) -> datetime:
        """Locks archive and manifest before the completion is recorded, so no completed
        snapshot of a locked location is ever deletable early. A failed lock fails the run
        and removes what it can: an unlocked archive must not pass for a locked one."""
        until = snap.expiry(finished_at) or finished_at + timedelta(days=storage.lock_days)
        try:
            for key in (snap.archive_key, manifest_key(snap.archive_key)):
                storage.lock(key, until)
        except StorageError:
            try:
                remove_archive(storage, snap.archive_key)
            except StorageError:
                log.warning("archive %s stays without its manifest", snap.archive_key, extra=_fields(snap))
            raise
        return until

    def _expected(self, restore: Restore) -> Expected:
        """What the snapshot's events say its archive is: the restore believes nothing else."""
        try:
            snap = self.app.get_snapshot(restore.snapshot_id)
        except Exception:  # noqa: BLE001 - a snapshot gone from the store: its archive is too
            raise LookupError(f"snapshot {restore.snapshot_id} is no longer in the event store") from None
        return Expected.of(snap, restore.archive_key)

    def run_restore(self, restore: Restore) -> None:
        run = _Run(self.app, restore, lambda: self.app.get_restore(restore.id), self.stop_poll)

        def work(run: _Run) -> Callable[[], None]:
            storage = self.resources.storages.get(restore.storage)
            target = self.resources.targets.get(restore.target)
            if storage is None or target is None:
                missing = restore.storage if storage is None else restore.target
                raise LookupError(f"{missing!r} is no longer configured")
            self.resources.usable(restore.storage)
            if restore.attempt > 1:
                target.cleanup_partials()  # what the dead attempt left
            expected = self._expected(restore)
            result = run_restore(
                storage,
                restore.archive_key,
                target,
                list(restore.collections),
                ProgressThrottle(run.report),
                run.should_stop,
                mapping=restore.mapping,
                existing=restore.existing,
                dry_run=restore.dry_run,
                keyring=self.resources.keyrings.get(restore.storage),
                keep_owners=restore.keep_owners,
                on_plan=run.planned,
                resume=restore.plan if restore.attempt > 1 else None,
                run_id=str(restore.id),
                expected=expected,
                before_commit=run.still_ours,
            )

            def finish() -> None:
                assert isinstance(run.agg, Restore)  # this run loads its restore, nothing else
                run.agg.complete(result.items, result.bytes, result.collections, _now(), result.schema)

            return finish

        self._execute(run, work, lambda: None)
