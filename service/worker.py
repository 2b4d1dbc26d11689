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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError

from domain.application import Snapledger
from domain.drill import Drill
from domain.errors import InvalidTransition
from domain.restore import Restore
from domain.snapshot import DELETED, RUNNING, Snapshot
from service import window
from service.claimed_run import ClaimedRun, Fenced, StoreUnavailable, utc_now
from service.moment import replay_to_moment
from service.resources import Resources
from transfer.errors import Stopped
from transfer.runs.backup import remove_archive, run_backup
from transfer.runs.contract import Expected
from transfer.runs.progress import ProgressThrottle
from transfer.runs.restore import run_restore
from transfer.storage import Storage, StorageError
from transfer.storage.layout import manifest_key

log = logging.getLogger("snapledger.worker")


Work = tuple[str, UUID]  # ("snapshot" | "restore", id)


def _fields(task: Any) -> dict[str, str]:
    """Ids that let an operator find a log line's run (JSON logs carry them as keys)."""
    return {
        "task_name": task.task_name or "",
        f"{task.kind}_id": str(task.id),
        "policy_id": str(task.policy_id),
        "attempt": str(task.attempt),
    }


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
            task = self.app.claim_run(kind, task_id, self.worker_id, self.lease_seconds, utc_now())
            if task is None:
                continue  # another worker has it, its slot is busy, or it is no longer due
            run: Callable[[Any], None] = self.run_restore
            if kind in ("snapshot", "drill"):
                run = self.run_snapshot if kind == "snapshot" else self.run_drill
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
        self, run: ClaimedRun, work: Callable[[ClaimedRun], Callable[[], None]], cleanup: Callable[[], None]
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
                run.agg.fail(reason, utc_now())
                run.app.record(run.agg)
            except (IntegrityError, InvalidTransition):
                try:
                    fresh = run._fresh()
                except Fenced:
                    return
                if fresh.status == RUNNING:
                    fresh.fail(reason, utc_now())
                    run.app.record(fresh)

    def run_snapshot(self, snap: Snapshot) -> None:
        run = ClaimedRun(self.app, snap, lambda: self.app.get_snapshot(snap.id), self.stop_poll)
        storage = self.resources.storages.get(snap.storage)
        if snap.attempt > 1 and storage is not None:
            storage.cleanup_partials(snap.archive_key)  # what the dead attempt left
            storage.cleanup_partials(manifest_key(snap.archive_key))

        def work(run: ClaimedRun) -> Callable[[], None]:
            source = self.resources.sources.get(snap.source)
            if source is None or storage is None:
                missing = snap.source if source is None else snap.storage
                raise LookupError(f"{missing!r} is no longer configured")
            self.resources.usable(snap.storage)
            with self._window(snap, source) as (reading, capture_window):
                result = self._backup(run, snap, reading, storage)
            if capture_window is not None and capture_window.get("kind") == "mongodb":
                capture_window = window.oplog_window(result.point_in_time or {}, source)
            if capture_window is not None:  # the capture streams from here (service/capture_loop.py)
                result.point_in_time = {**(result.point_in_time or {}), "capture": capture_window}

            finished_at = utc_now()
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
                    result.point_in_time,
                )

            return finish

        def cleanup() -> None:
            if storage is not None:
                remove_archive(storage, snap.archive_key)

        self._execute(run, work, cleanup)

    @contextmanager
    def _window(self, snap: Snapshot, source: Any) -> Iterator[tuple[Any, dict[str, Any] | None]]:
        """A continuous policy's PostgreSQL snapshot is read in a new capture window's slot;
        a MongoDB one's window starts at the cluster time the snapshot ends at (known after)."""
        continuous = self.app.get_policy(snap.policy_id).continuous  # a failed read fails the run
        kind = getattr(source, "kind", None)
        if continuous is None or kind not in ("postgresql", "mongodb"):
            yield source, None
            return
        if kind == "mongodb":
            yield source, {"kind": "mongodb"}
            return
        with window.opened(source, snap.id) as (reading, facts):
            yield reading, facts

    def _backup(self, run: ClaimedRun, snap: Snapshot, source: Any, storage: Storage) -> Any:
        return run_backup(
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

    def run_drill(self, drill: Drill) -> None:
        """Restores the drill's snapshot into a scratch copy, checks it row for row against
        the archive and with the policy's checks, and removes the copy whatever happens."""
        run = ClaimedRun(self.app, drill, lambda: self.app.get_drill(drill.id), self.stop_poll)

        def work(run: ClaimedRun) -> Callable[[], None]:
            from service.drill import read_back, run_checks, scratch_place
            from transfer.runs.drill import archive_digests, compare
            from transfer.runs.reading import load_manifest

            storage = self.resources.storages.get(drill.storage)
            target = self.resources.targets.get(drill.target)
            if storage is None or target is None:
                missing = drill.storage if storage is None else drill.target
                raise LookupError(f"{missing!r} is no longer configured")
            snap = self.app.get_snapshot(drill.snapshot_id)
            expected = Expected.of(snap, drill.archive_key)
            keyring = self.resources.keyrings.get(drill.storage)
            manifest = load_manifest(storage, drill.archive_key, expected)
            started = time.monotonic()
            with scratch_place(drill, target, manifest, self.resources.sources) as place:
                report = ProgressThrottle(run.report)
                run_restore(
                    storage, drill.archive_key, place.target, [], report, run.should_stop,
                    mapping=place.mapping, existing="fail", keyring=keyring, run_id=str(drill.id),
                    expected=expected, before_commit=run.still_ours,
                )  # fmt: skip
                rto = time.monotonic() - started
                collections = compare(archive_digests(storage, drill.archive_key, keyring, expected),
                                      read_back(place, manifest))  # fmt: skip
                answered = run_checks(place, drill.checks)
            result = {
                "collections": collections,
                "checks": answered,
                "scratch": drill.scratch,
                "removed": True,
            }

            def finish() -> None:
                assert isinstance(run.agg, Drill)  # this run loads its drill, nothing else
                run.agg.passed(rto, result, utc_now())

            return finish

        def cleanup() -> None:  # stopped, or asked to stop while its worker was gone
            from service.drill import remove_scratch

            target = self.resources.targets.get(drill.target)
            if target is not None:
                remove_scratch(drill, target)

        self._execute(run, work, cleanup)

    def run_restore(self, restore: Restore) -> None:
        run = ClaimedRun(self.app, restore, lambda: self.app.get_restore(restore.id), self.stop_poll)

        def work(run: ClaimedRun) -> Callable[[], None]:
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
                validate=restore.validate,
                on_plan=run.planned,
                resume=restore.plan if restore.attempt > 1 else None,
                run_id=str(restore.id),
                expected=expected,
                before_commit=run.still_ours,
            )

            if restore.point_in_time:  # then the captured changes, up to the moment
                replayed = replay_to_moment(
                    self.app, restore, storage, target, self.resources.keyrings.get(restore.storage)
                )
                result.schema = {
                    **(result.schema or {}),
                    "point_in_time": {**restore.point_in_time, **replayed},
                }

            def finish() -> None:
                assert isinstance(run.agg, Restore)  # this run loads its restore, nothing else
                run.agg.complete(result.items, result.bytes, result.collections, utc_now(), result.schema)

            return finish

        self._execute(run, work, lambda: None)
