"""Restore aggregate: one run streaming a snapshot's archive into a target."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.base import TimedAggregate
from domain.errors import InvalidTransition
from domain.run import (
    COMPLETED,
    DEFAULT_LEASE_SECONDS,
    FAILED,
    REQUESTED,
    RUNNING,
    STOPPED,
    RunState,
    upcast_started_v1_v2,
)


class Restore(RunState, TimedAggregate):
    """Copies what it needs of the snapshot at request time; the snapshot may go later."""

    kind = "restore"

    class RestoreRequested(Aggregate.Created):
        """v2 added the per-restore options, v3 keep_owners, v4 trust_unverified, v5
        validate, v6 point_in_time (a restore to a moment); older events load with the old
        behaviour."""

        snapshot_id: UUID
        policy_id: UUID
        sub_name: str
        storage: str
        archive_key: str
        target: str
        collections: list[str]
        mapping: dict[str, str]
        existing: str | None
        dry_run: bool
        actor: str
        keep_owners: bool | None
        trust_unverified: bool
        validate: bool
        point_in_time: dict[str, Any] | None
        class_version = 6

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["mapping"] = {}
            state["existing"] = None
            state["dry_run"] = False

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["keep_owners"] = None

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["trust_unverified"] = False

        @staticmethod
        def upcast_v4_v5(state: dict[str, Any]) -> None:
            state["validate"] = False

        @staticmethod
        def upcast_v5_v6(state: dict[str, Any]) -> None:
            state["point_in_time"] = None

    @event(RestoreRequested)
    def __init__(
        self,
        snapshot_id: UUID,
        policy_id: UUID,
        sub_name: str,
        storage: str,
        archive_key: str,
        target: str,
        collections: list[str],
        mapping: dict[str, str],
        existing: str | None,
        dry_run: bool,
        actor: str,
        keep_owners: bool | None = None,
        trust_unverified: bool = False,
        validate: bool = False,
        point_in_time: dict[str, Any] | None = None,
    ) -> None:
        self.snapshot_id = snapshot_id
        # {"capture_id", "to_time" or "to_lsn"}: replay the capture's changes up to there
        self.point_in_time = point_in_time
        self.policy_id = policy_id
        self.sub_name = sub_name
        self.storage = storage
        self.archive_key = archive_key
        self.target = target
        self.collections = collections
        self.mapping = mapping
        self.existing = existing
        self.dry_run = dry_run
        self.keep_owners = keep_owners
        self.trust_unverified = trust_unverified
        self.validate = validate  # MongoDB: the target's validators apply; refused documents are counted
        self.plan: dict[str, Any] | None = None  # what the latest attempt found in the target
        self.schema: dict[str, Any] | None = None  # what the target said on completion
        self.status = REQUESTED
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

    def start(self, worker: str, task_name: str, lease_seconds: int, now: datetime) -> None:
        """Claims a queued run, or re-claims one whose worker's lease lapsed (attempt + 1)."""
        self._check_claimable(now)
        self._started(worker, task_name, self.attempt + 1, lease_seconds)

    class RestoreStarted(TimedAggregate.Event):
        """v2 added the lease; v1 runs load with the default one."""

        worker: str
        task_name: str
        attempt: int
        lease_seconds: int
        class_version = 2
        upcast_v1_v2 = staticmethod(upcast_started_v1_v2)

    @event(RestoreStarted)
    def _started(self, worker: str, task_name: str, attempt: int, lease_seconds: int) -> None:
        self._begin(worker, task_name, attempt, lease_seconds)

    def heartbeat(self) -> None:
        """Renews the lease while a long step records no progress."""
        self._require("renew the lease of", RUNNING)
        self._heartbeat()

    @event("RestoreHeartbeat")
    def _heartbeat(self) -> None:
        self.last_beat = self.modified_on

    def progress(self, items: int, bytes: int, percent: float, collection: str | None, at: datetime) -> None:
        self._require("record progress of", RUNNING)
        self._progressed(items, bytes, round(percent, 2), collection, self.elapsed_until(at))

    @event("RestoreProgressed")
    def _progressed(
        self, items: int, bytes: int, percent: float, collection: str | None, elapsed_seconds: float
    ) -> None:
        self.items, self.bytes, self.percent = items, bytes, percent
        self.last_beat = self.modified_on

    def planned(self, facts: dict[str, Any]) -> None:
        """Recorded before the first write to the target: what was there already, so that
        a later attempt knows what a dead one created (and removes it) before it starts."""
        self._require("record the plan of", RUNNING)
        self._planned(facts)

    @event("RestorePlanned")
    def _planned(self, facts: dict[str, Any]) -> None:
        self.plan = facts
        self.last_beat = self.modified_on

    def complete(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        finished_at: datetime,
        schema: dict[str, Any] | None = None,
    ) -> None:
        self._require("complete", RUNNING)
        self._completed(items, bytes, collections, self.elapsed_until(finished_at), schema)

    class RestoreCompleted(TimedAggregate.Event):
        """v2 added `schema`: what a schema-carrying target skipped, and roles it lacks."""

        items: int
        bytes: int
        collections: dict[str, dict[str, Any]]
        elapsed_seconds: float
        schema: dict[str, Any] | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["schema"] = None

    @event(RestoreCompleted)
    def _completed(
        self,
        items: int,
        bytes: int,
        collections: dict[str, dict[str, Any]],
        elapsed_seconds: float,
        schema: dict[str, Any] | None,
    ) -> None:
        self.status = COMPLETED
        self.items, self.bytes, self.percent = items, bytes, 100.0
        self.schema = schema

    def fail(self, reason: str, finished_at: datetime) -> None:
        self._require("fail", RUNNING)
        self._failed(reason, self.items, self.bytes, self.elapsed_until(finished_at))

    @event("RestoreFailed")
    def _failed(self, reason: str, items: int, bytes: int, elapsed_seconds: float) -> None:
        self.status = FAILED

    def request_stop(self, actor: str) -> None:
        self._require("stop", REQUESTED, RUNNING)
        if self.status == REQUESTED:
            self._stopped(actor, 0, 0, 0.0, 0.0)
        elif self.stop_requested:
            raise InvalidTransition(f"restore {self.sub_name} is already stopping")
        else:
            self._stop_requested(actor)

    @event("RestoreStopRequested")
    def _stop_requested(self, actor: str) -> None:
        self.stop_requested = True

    def acknowledge_stop(self, finished_at: datetime) -> None:
        self._require("acknowledge stop of", RUNNING)
        self._stopped("worker", self.items, self.bytes, self.percent, self.elapsed_until(finished_at))

    @event("RestoreStopped")
    def _stopped(self, actor: str, items: int, bytes: int, percent: float, elapsed_seconds: float) -> None:
        self.status = STOPPED


__all__ = ["Restore", "REQUESTED", "RUNNING", "COMPLETED", "FAILED", "STOPPED"]
