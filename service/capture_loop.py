"""Runs each continuous policy's capture: one window per snapshot that opened one, the
newest alone streaming. A newer window, a stopped or deleted policy, or turning continuous
off stops the older window and drops its slot, so no slot holds WAL for nothing; a slot
whose snapshot failed, stopped or was deleted is dropped the same way.

Every append is at the Capture's version, and PostgreSQL lets one session at a time read a
slot, so two processes stepping the same capture cannot both archive a range: the loser's
append is refused before its slot moves.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError

from domain.application import Snapledger
from domain.capture import CAPTURING, Capture, capture_id
from domain.errors import NotFound
from service.capture import ArchivingTask, CaptureFailed, CaptureSettings, CaptureTask, shapes_of
from service.resources import Resources
from transfer.sources.postgres.connection import conninfo
from transfer.storage.base import StorageError

log = logging.getLogger("snapledger.capture")
CAPTURE_ACTOR = "system:capture"
CAPTURED_KINDS = ("postgresql", "mongodb")
MIB = 1024 * 1024


class StoredRecorder:
    """The Capture aggregate in the event store: each fact is appended at once, at the
    version last seen; a refused append means another process has the capture."""

    def __init__(self, app: Snapledger, capture: Capture, worker: str | None = None) -> None:
        self.app = app
        self.agg = capture
        self.worker = worker

    def _save(self) -> None:
        """A refused or lost append leaves this copy ahead of the store (its events were
        collected): it is read again, or the loop drops this recorder with its task, so a
        later append can never skip a version."""
        try:
            self.app.record(self.agg)
        except Exception:
            with contextlib.suppress(Exception):  # the loop drops the task if this fails too
                self.agg = self.app.get_capture(self.agg.id)
            raise

    def position(self) -> str:
        return self.agg.position

    def archived(self, facts: dict[str, Any]) -> None:
        self.agg.archived(facts, self.worker)
        self._save()

    def failed(self, reason: str) -> None:
        self.agg.fail(reason)
        self._save()

    def checked(self, lsn: str, at: str) -> None:
        self.agg.checked(lsn, at, self.worker)
        self._save()

    def checked_at(self) -> str | None:
        return self.agg.restorable_until

    def checked_position(self) -> str:
        return self.agg.checked_lsn


class CaptureLoop:
    def __init__(
        self,
        app: Snapledger,
        resources: Resources,
        windows: Callable[[], list[dict[str, Any]]],
        tick_seconds: float = 1.0,
        worker_id: str = "",
    ) -> None:
        self.app = app
        self.worker_id = worker_id or f"capture:{id(self):x}"
        self.resources = resources
        self.windows = windows
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: dict[UUID, tuple[ArchivingTask, Any]] = {}  # and the connection it owns
        self._due: dict[UUID, float] = {}
        # capture id -> what its last step saw (policy, slot, retained WAL, alarm), for metrics
        self.last: dict[UUID, dict[str, Any]] = {}
        self._closed: set[UUID] = set()  # windows stopped and their slots dropped, this process
        self._swept: dict[str, float] = {}  # source -> when its slots were last swept
        self.sweep_seconds = 60.0

    def start(self) -> CaptureLoop:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        for _, conn in self._tasks.values():
            conn.close()
        self._tasks.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("capture loop error")
            self._stop.wait(self.tick_seconds)

    def tick(self) -> None:
        streaming: dict[str, set[str]] = {}  # source -> the slots its newest windows stream from
        for policy in self.windows():
            source = self.resources.sources.get(policy["source"])
            if source is None or getattr(source, "kind", None) not in CAPTURED_KINDS:
                continue
            kept = streaming.setdefault(policy["source"], set())
            if policy["windows"] and policy["windows"][0]["status"] == "completed":
                kept.add(policy["windows"][0]["slot"])
            live = policy["status"] != "deleted" and policy["status"] != "stopped" and policy["continuous"]
            for index, found in enumerate(policy["windows"]):
                newest = index == 0 and found["status"] == "completed" and live
                if newest:
                    self._stream(policy, found, source)
                else:
                    self._close(policy, found, source, self._why_closed(policy, found, live))
        now = time.monotonic()
        for name, kept in streaming.items():
            if self.resources.sources[name].kind != "postgresql":
                continue  # only PostgreSQL keeps anything (a slot) for a capture
            if now >= self._swept.get(name, 0.0):
                self._swept[name] = now + self.sweep_seconds
                self._sweep(self.resources.sources[name], kept)

    def _sweep(self, source: Any, kept: set[str]) -> None:
        """Drops the slots of this store's snapshots that hold WAL for nothing: the snapshot
        failed, stopped, was deleted, or a newer window took over. A slot of a snapshot
        still running is kept, and so is one this store does not know (another install's)."""
        from domain.snapshot import COMPLETED, DELETED, FAILED, STOPPED
        from service.window import SLOT_PATTERN, drop

        with psycopg.connect(
            conninfo(source.url, source.password), autocommit=True, connect_timeout=10
        ) as conn:
            names = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
        for name in names:
            found = SLOT_PATTERN.fullmatch(name)
            if found is None or name in kept:
                continue
            try:
                snapshot = self.app.get_snapshot(UUID(found.group(1)))
            except NotFound:
                continue
            if snapshot.status in (COMPLETED, FAILED, STOPPED, DELETED):
                try:
                    drop(source, name)
                    log.info("dropped replication slot %s: its snapshot is %s", name, snapshot.status)
                except psycopg.Error as e:
                    log.warning("could not drop replication slot %s: %s", name, self.resources.redact(str(e)))

    @staticmethod
    def _why_closed(policy: dict[str, Any], found: dict[str, Any], live: bool) -> str:
        if found["status"] != "completed":
            return f"its snapshot is {found['status']}"
        if not live:
            return (
                "continuous capture is off"
                if policy["status"] == "active"
                else f"the policy is {policy['status']}"
            )
        return "a newer snapshot opened the next window"

    def _capture(self, policy: dict[str, Any], found: dict[str, Any]) -> Capture | None:
        cid = capture_id(UUID(policy["id"]), UUID(found["snapshot_id"]))
        try:
            return self.app.get_capture(cid)
        except NotFound:
            pass
        try:
            self.app.start_capture(
                policy["id"],
                found["snapshot_id"],
                found["slot"],
                found["from_position"],
                found.get("from_time"),
            )
        except IntegrityError:  # another process started it first
            pass
        try:
            return self.app.get_capture(cid)
        except NotFound:
            return None

    def _stream(self, policy: dict[str, Any], found: dict[str, Any], source: Any) -> None:
        capture = self._capture(policy, found)
        if capture is None or capture.status != CAPTURING:
            return
        settings = policy["continuous"]
        # Leased: a worker that recorded within three intervals (plus a margin) still has it.
        lease = 3 * float(settings["segment_seconds"]) + 10
        if capture.held_by_another(self.worker_id, datetime.now(UTC), lease):
            self._forget(capture.id)
            return
        now = time.monotonic()
        if now < self._due.get(capture.id, 0.0):
            return
        task = self._task(capture, settings, source)
        try:
            result = task.step()
        except CaptureFailed as e:
            log.error("capture of policy %s ended: %s", policy["name"], e)
            self._forget(capture.id)
            return
        except IntegrityError:
            log.warning("capture of policy %s is recorded by another process", policy["name"])
            self._forget(capture.id)
            return
        except Exception as e:  # storage or source unreachable: nothing released, alarm kept
            log.warning(
                "capture of policy %s could not archive: %s", policy["name"], self.resources.redact(str(e))
            )
            if not isinstance(e, StorageError):  # the store or the source: start afresh
                self._forget(capture.id)
            try:  # storage unreachable: the same task keeps what it learned (tables' shapes)
                retained, alarm = self._task(capture, settings, source).check()
                self._saw(policy, capture, retained, alarm or f"could not archive: {type(e).__name__}")
            except Exception:  # noqa: BLE001 - the source itself is unreachable
                self._forget(capture.id)
                self._saw(policy, capture, None, "the source is unreachable")
            self._due[capture.id] = now + float(settings["segment_seconds"])
            return
        self._saw(policy, capture, result.retained_wal_bytes, result.alarm)
        if result.reshaped is not None:
            self._reshaped(policy, task, result.reshaped)
            return
        self._due[capture.id] = now if result.more else now + float(settings["segment_seconds"])

    def _reshaped(self, policy: dict[str, Any], task: ArchivingTask, reason: str) -> None:
        """A captured table changed shape: this window ends where it did, and a new snapshot
        (taken after the change) opens the next one."""
        recorder = task.recorder
        assert isinstance(recorder, StoredRecorder)  # this loop makes every task's recorder
        recorder.agg.stop(reason)
        try:
            self.app.record(recorder.agg)
        except IntegrityError:
            return  # another process recorded something first: the next tick sees it
        self._forget(recorder.agg.id)
        log.warning("capture of policy %s: %s", policy["name"], reason)
        self.app.request_snapshot(policy["id"], CAPTURE_ACTOR)

    def _saw(self, policy: dict[str, Any], capture: Capture, retained: int | None, alarm: str | None) -> None:
        self.last[capture.id] = {
            "policy": policy["name"], "policy_id": policy["id"], "slot": capture.slot,
            "retained_wal_bytes": retained, "alarm": alarm,
        }  # fmt: skip

    def _task(self, capture: Capture, settings: dict[str, Any], source: Any) -> ArchivingTask:
        held = self._tasks.get(capture.id)
        if held is not None and not getattr(held[1], "closed", False):
            return held[0]
        recorder = StoredRecorder(self.app, capture, self.worker_id)
        policy = self.app.get_policy(capture.policy_id).name
        window = self._window(capture)
        common: dict[str, Any] = {
            "policy": policy,
            "storage": self.resources.storages[capture.storage],
            "recorder": recorder,
            "settings": CaptureSettings(
                segment_bytes=int(settings["segment_bytes"]),
                max_slot_wal_mb=int(settings["max_slot_wal_mb"]),
                checkpoint_seconds=float(settings["segment_seconds"]),
            ),
            "keyring": self.resources.keyrings.get(capture.storage),
            "capture_id": str(capture.id),
            "signer": self.resources.signers.get(capture.storage),
            "identity": {
                "capture_id": str(capture.id), "policy": policy, "policy_id": str(capture.policy_id),
                "snapshot_id": str(capture.snapshot_id), "source": capture.source, "window": window,
            },
        }  # fmt: skip
        task: ArchivingTask
        if source.kind == "mongodb":
            from service.oplog_capture import OplogCaptureTask

            client = source.capture_client()
            databases = list(window.get("databases") or []) or list(source.databases)
            task = OplogCaptureTask(client, databases, checked_position=recorder.checked_position, **common)
            self._tasks[capture.id] = (task, _Closing(client))
            return task
        conn = psycopg.connect(conninfo(source.url, source.password), autocommit=True, connect_timeout=10)
        task = CaptureTask(conn, capture.slot, **common, shapes=shapes_of(capture.segments))
        self._tasks[capture.id] = (task, conn)
        return task

    def _window(self, capture: Capture) -> dict[str, Any]:
        """The window's facts as its snapshot recorded them (slot or databases, start)."""
        snap = self.app.get_snapshot(capture.snapshot_id)
        return dict((snap.point_in_time or {}).get("capture") or {})

    def _forget(self, cid: UUID, done: bool = False) -> None:
        if done:
            self.last.pop(cid, None)
        held = self._tasks.pop(cid, None)
        if held is not None:
            held[1].close()

    def _close(self, policy: dict[str, Any], found: dict[str, Any], source: Any, reason: str) -> None:
        cid = capture_id(UUID(policy["id"]), UUID(found["snapshot_id"]))
        if cid in self._closed:
            return
        self._forget(cid, done=True)
        try:
            capture = self.app.get_capture(cid)
        except NotFound:
            capture = None
        if capture is not None and capture.status == CAPTURING:
            capture.stop(reason)
            try:
                self.app.record(capture)
            except IntegrityError:
                return  # changed meanwhile: the next tick sees it again
        if source.kind != "postgresql" or not found["slot"]:  # nothing kept on the source
            self._closed.add(cid)
            return
        from service.window import drop

        try:
            if drop(source, found["slot"]):
                log.info(
                    "dropped replication slot %s of policy %s: %s", found["slot"], policy["name"], reason
                )
            self._closed.add(cid)
        except psycopg.Error as e:
            log.warning(
                "could not drop replication slot %s: %s", found["slot"], self.resources.redact(str(e))
            )


class _Closing:
    """A MongoDB client as the loop holds a task's connection: closed with the task."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.closed = False

    def close(self) -> None:
        self.client.close()
        self.closed = True
