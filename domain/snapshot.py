"""Snapshot aggregate: one backup run of a policy and the archive it produces."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import TimedAggregate
from domain.errors import InvalidTransition
from domain.run import (  # noqa: E402,F401 - the states are part of this module's language
    COMPLETED,
    DEFAULT_LEASE_SECONDS,
    DELETED,
    FAILED,
    FINISHED,
    HAS_ARCHIVE,
    PARTIALLY_FAILED,
    REQUESTED,
    RUNNING,
    STOPPED,
    RunState,
    upcast_started_v1_v2,
)

TRIGGERS = ("manual", "schedule", "rebuild", "import")


class Snapshot(RunState, TimedAggregate):
    """Freezes the policy's settings at request time so later edits never change a run."""

    kind = "snapshot"

    @event("SnapshotRequested")
    def __init__(
        self,
        id: UUID,  # noqa: A002 - the policy numbers its snapshots before they exist
        policy_id: UUID,
        policy_name: str,
        sequence: int,
        sub_name: str,
        file_name: str,
        archive_key: str,
        source: str,
        storage: str,
        collections: dict[str, Any],
        expire_after_seconds: int | None,
        trigger: str,
        actor: str,
    ) -> None:
        self.policy_id = policy_id
        self.policy_name = policy_name
        self.sequence = sequence
        self.sub_name = sub_name
        self.file_name = file_name
        self.archive_key = archive_key
        self.source = source
        self.storage = storage
        self.collections = collections
        self.expire_after_seconds = expire_after_seconds
        self.trigger = trigger
        self.status = REQUESTED
        self.seal: dict[str, Any] | None = None
        self.sha256: str | None = None  # of the stored archive, once it is written
        self.point_in_time: dict[str, Any] | None = None  # whether (and how) it is one moment
        self.verification: str | None = None
        self.stop_requested = False
        self.worker: str | None = None
        self.task_name: str | None = None
        self.attempt = 0
        self.started_at: datetime | None = None
        self.last_beat: datetime | None = None
        self.lease_seconds = DEFAULT_LEASE_SECONDS
        self.items = 0
        self.bytes = 0
        self.percent = 0.0
        self.locked_until: datetime | None = None

    def start(self, worker: str, task_name: str, lease_seconds: int, now: datetime) -> None:
        """Claims a queued run, or re-claims one whose worker's lease lapsed (attempt + 1)."""
        self._check_claimable(now)
        self._started(worker, task_name, self.attempt + 1, lease_seconds)

    class SnapshotStarted(TimedAggregate.Event):
        """v2 added the lease; v1 runs load with the default one."""

        worker: str
        task_name: str
        attempt: int
        lease_seconds: int
        class_version = 2
        upcast_v1_v2 = staticmethod(upcast_started_v1_v2)

    @event(SnapshotStarted)
    def _started(self, worker: str, task_name: str, attempt: int, lease_seconds: int) -> None:
        self._begin(worker, task_name, attempt, lease_seconds)

    def heartbeat(self) -> None:
        """Renews the lease while a long step records no progress."""
        self._require("renew the lease of", RUNNING)
        self._heartbeat()

    @event("SnapshotHeartbeat")
    def _heartbeat(self) -> None:
        self.last_beat = self.modified_on

    def progress(self, items: int, bytes: int, percent: float, collection: str | None, at: datetime) -> None:
        self._require("record progress of", RUNNING)
        self._progressed(items, bytes, round(percent, 2), collection, self.elapsed_until(at))

    @event("SnapshotProgressed")
    def _progressed(
        self, items: int, bytes: int, percent: float, collection: str | None, elapsed_seconds: float
    ) -> None:
        self.items, self.bytes, self.percent = items, bytes, percent
        self.last_beat = self.modified_on
        self.last_beat = self.modified_on

    def expiry(self, finished_at: datetime) -> datetime | None:
        if not self.expire_after_seconds:
            return None
        return finished_at + timedelta(seconds=self.expire_after_seconds)

    def complete(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        sha256: str,
        finished_at: datetime,
        locked_until: datetime | None = None,
        failed_collections: dict[str, str] | None = None,
        seal: dict[str, Any] | None = None,
        point_in_time: dict[str, Any] | None = None,
    ) -> None:
        """`point_in_time`: whether the archive is the source at one moment, how, and
        (MongoDB) its cluster time. `locked_until`: the storage's object lock on the
        archive, when the location has one.
        `failed_collections`: collections the archive lacks, with reasons; the snapshot is
        then partially failed, and restorable for what it holds. `seal`: what the archive
        must be when it is read back (its manifest's SHA-256, its encryption key id or None
        for plaintext, the id it was written under): nothing read from storage decides it."""
        self._require("complete", RUNNING)
        args = (
            items,
            bytes,
            collections,
            sha256,
            self.elapsed_until(finished_at),
            self.expiry(finished_at),
            locked_until,
        )
        if failed_collections:
            self._partially_failed(*args, failed_collections, seal, point_in_time)
        else:
            self._completed(*args, seal, point_in_time)

    class SnapshotPartiallyFailed(TimedAggregate.Event):
        """v2 added the archive's seal (older archives are checked by their SHA-256 alone),
        v3 whether it is one point in time (older ones did not say)."""

        items: int
        bytes: int
        collections: dict[str, dict[str, Any]]
        sha256: str
        elapsed_seconds: float
        expires_at: datetime | None
        locked_until: datetime | None
        failed_collections: dict[str, str]
        seal: dict[str, Any] | None
        point_in_time: dict[str, Any] | None
        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["seal"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["point_in_time"] = None

    @event(SnapshotPartiallyFailed)
    def _partially_failed(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        sha256: str,
        elapsed_seconds: float,
        expires_at: datetime | None,
        locked_until: datetime | None,
        failed_collections: dict[str, str],
        seal: dict[str, Any] | None,
        point_in_time: dict[str, Any] | None,
    ) -> None:
        self._archived(items, bytes, collections, sha256, expires_at, locked_until, seal, point_in_time)
        self.status = PARTIALLY_FAILED
        self.failed_collections: dict[str, str] = failed_collections

    class SnapshotCompleted(TimedAggregate.Event):
        """v2 added the object lock's retain-until time (older archives were never locked),
        v3 the archive's seal (older archives are checked by their SHA-256 alone), v4 whether
        it is one point in time (older ones did not say)."""

        items: int
        bytes: int
        collections: dict[str, dict[str, Any]]
        sha256: str
        elapsed_seconds: float
        expires_at: datetime | None
        locked_until: datetime | None
        seal: dict[str, Any] | None
        point_in_time: dict[str, Any] | None
        class_version = 4

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["locked_until"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["seal"] = None

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["point_in_time"] = None

    @event(SnapshotCompleted)
    def _completed(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        sha256: str,
        elapsed_seconds: float,
        expires_at: datetime | None,
        locked_until: datetime | None,
        seal: dict[str, Any] | None,
        point_in_time: dict[str, Any] | None,
    ) -> None:
        self._archived(items, bytes, collections, sha256, expires_at, locked_until, seal, point_in_time)

    def _archived(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        sha256: str,
        expires_at: datetime | None,
        locked_until: datetime | None,
        seal: dict[str, Any] | None = None,
        point_in_time: dict[str, Any] | None = None,
    ) -> None:
        self.status = COMPLETED
        self.seal = seal
        self.point_in_time = point_in_time
        self.verification = "sealed"  # written by this installation: its events say what it is
        self.items, self.bytes, self.percent = items, bytes, 100.0
        self.manifest_collections = collections
        self.sha256 = sha256  # None once imported: the manifest's SHA-256 stands in
        self.expires_at = expires_at
        self.locked_until = locked_until
        self.failed_collections = {}

    def check_deletable(self, now: datetime) -> None:
        """An archive under object lock cannot go before its retain-until time; saying so
        here gives a clear refusal instead of a storage AccessDenied halfway through."""
        locked = self.locked_until
        if locked is not None and now < locked:
            raise InvalidTransition(
                f"snapshot {self.sub_name} is under object lock until {locked.isoformat()}: "
                "it cannot be deleted before then"
            )

    def import_archive(
        self,
        archive_bytes: int,
        manifest: dict[str, Any],
        manifest_sha256: str,
        started_at: datetime | None,
        finished_at: datetime,
        actor: str,
        verification: str = "unverified",
    ) -> None:
        """Records an archive found in storage (catalog resync) as a completed snapshot.

        The facts come from its manifest, which is the archive's commit marker; expiry
        follows the original run's retention when the manifest carries it."""
        self._require("import an archive into", REQUESTED)
        expires_at = self.expiry(finished_at)
        elapsed = round((finished_at - started_at).total_seconds(), 3) if started_at else 0.0
        self._imported(
            int(manifest.get("items", 0)),
            archive_bytes,
            manifest["collections"],
            manifest_sha256,
            started_at,
            finished_at,
            elapsed,
            expires_at,
            actor,
            dict(manifest.get("failed_collections") or {}),
            verification,
            _import_seal(manifest, manifest_sha256),
            manifest.get("point_in_time") if isinstance(manifest.get("point_in_time"), dict) else None,
        )

    def import_window(self, window: dict[str, Any]) -> None:
        """A capture window found in storage after this snapshot (catalog resync): its
        segments' manifests say where it starts, as the snapshot's completion would have."""
        if self.status not in HAS_ARCHIVE:
            raise InvalidTransition(f"snapshot is {self.status}: no capture window can follow it")
        self._window_imported(window)

    @event("CaptureWindowImported")
    def _window_imported(self, window: dict[str, Any]) -> None:
        self.point_in_time = {**(self.point_in_time or {}), "capture": window}

    class SnapshotImported(TimedAggregate.Event):
        """v2 added the collections a partially failed run left out, v3 how the archive was
        verified (signed, encrypted, unverified) and its seal (older imports are unverified),
        v4 whether it is one point in time, as its manifest says."""

        items: int
        bytes: int
        collections: dict[str, dict[str, Any]]
        manifest_sha256: str
        started_at: datetime | None
        finished_at: datetime
        elapsed_seconds: float
        expires_at: datetime | None
        actor: str
        failed_collections: dict[str, str]
        verification: str
        seal: dict[str, Any] | None
        point_in_time: dict[str, Any] | None
        class_version = 4

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["failed_collections"] = {}

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["verification"] = "unverified"
            state["seal"] = None

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["point_in_time"] = None

    @event(SnapshotImported)
    def _imported(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        manifest_sha256: str,
        started_at: datetime | None,
        finished_at: datetime,
        elapsed_seconds: float,
        expires_at: datetime | None,
        actor: str,
        failed_collections: dict[str, str],
        verification: str,
        seal: dict[str, Any] | None,
        point_in_time: dict[str, Any] | None,
    ) -> None:
        self._archived(items, bytes, collections, "", expires_at, None, seal, point_in_time)
        self.sha256 = None
        self.manifest_sha256 = manifest_sha256
        self.verification = verification
        self.started_at = started_at
        if failed_collections:
            self.status = PARTIALLY_FAILED
            self.failed_collections = failed_collections

    def fail(self, reason: str, finished_at: datetime) -> None:
        self._require("fail", RUNNING)
        self._failed(reason, self.items, self.bytes, self.elapsed_until(finished_at))

    @event("SnapshotFailed")
    def _failed(self, reason: str, items: int, bytes: int, elapsed_seconds: float) -> None:
        self.status = FAILED
        self.reason = reason

    def request_stop(self, actor: str) -> None:
        """A queued run stops at once; a running one is asked to stop and acknowledges."""
        self._require("stop", REQUESTED, RUNNING)
        if self.status == REQUESTED:
            self._stopped(actor, 0, 0, 0.0, 0.0)
        elif self.stop_requested:
            raise InvalidTransition(f"snapshot {self.sub_name} is already stopping")
        else:
            self._stop_requested(actor)

    @event("SnapshotStopRequested")
    def _stop_requested(self, actor: str) -> None:
        self.stop_requested = True

    def acknowledge_stop(self, finished_at: datetime) -> None:
        self._require("acknowledge stop of", RUNNING)
        self._stopped("worker", self.items, self.bytes, self.percent, self.elapsed_until(finished_at))

    @event("SnapshotStopped")
    def _stopped(self, actor: str, items: int, bytes: int, percent: float, elapsed_seconds: float) -> None:
        self.status = STOPPED

    def delete(self, reason: str, files_removed: bool, actor: str) -> None:
        if self.status == DELETED:
            raise InvalidTransition(f"snapshot {self.sub_name} is already deleted")
        self._deleted(reason, files_removed, actor)

    @event("SnapshotDeleted")
    def _deleted(self, reason: str, files_removed: bool, actor: str) -> None:
        self.status = DELETED


def _import_seal(manifest: dict[str, Any], manifest_sha256: str) -> dict[str, Any]:
    """What an imported archive must stay: its manifest as found (later changes are
    refused) and what that manifest says of its encryption and of the snapshot it was
    written under (the AEAD data of an encrypted archive binds that id)."""
    encryption = manifest.get("encryption") or {}
    return {
        "manifest_sha256": manifest_sha256,
        "encryption_key_id": encryption.get("key_id") if encryption else None,
        "aead_context": encryption.get("aad") if encryption else None,
        "snapshot_id": str(manifest.get("snapshot_id") or ""),
    }


__all__ = [
    "Snapshot",
    "TRIGGERS",
    "REQUESTED",
    "RUNNING",
    "COMPLETED",
    "PARTIALLY_FAILED",
    "FAILED",
    "STOPPED",
    "DELETED",
    "FINISHED",
    "HAS_ARCHIVE",
]
