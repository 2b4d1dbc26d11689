"""BackupPolicy aggregate and the name claim that keeps live policy names unique."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.base import TimedAggregate
from domain.errors import InvalidTransition

ACTIVE, STOPPED, DELETED = "active", "stopped", "deleted"
POLICY_STATUSES = (ACTIVE, STOPPED, DELETED)
SCHEDULER_ACTOR = "system:scheduler"
RETENTION_ACTOR = "system:retention"
EDITABLE_FIELDS = (
    "name",
    "source",
    "storage",
    "schedule",
    "timezone",
    "retention",
    "collections",
    "continuous",
    "drill",
)


class BackupPolicy(TimedAggregate):
    """A named backup definition; it also numbers and remembers its snapshots."""

    class PolicyCreated(Aggregate.Created):
        """v2 added the schedule's time zone (older policies ran in UTC); v3 continuous
        capture (older policies had none); v4 restore drills (none before)."""

        name: str
        source: str
        storage: str
        schedule: str | None
        timezone: str
        retention: dict[str, Any]
        collections: dict[str, Any]
        actor: str
        continuous: dict[str, Any] | None
        drill: dict[str, Any] | None
        class_version = 4

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["timezone"] = "UTC"

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["continuous"] = None

        @staticmethod
        def upcast_v3_v4(state: dict[str, Any]) -> None:
            state["drill"] = None

    @event(PolicyCreated)
    def __init__(
        self,
        name: str,
        source: str,
        storage: str,
        schedule: str | None,
        timezone: str,
        retention: dict[str, Any],
        collections: dict[str, Any],
        actor: str,
        continuous: dict[str, Any] | None = None,
        drill: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.continuous = continuous  # capture settings, or None: snapshots only
        self.drill = drill  # {target, schedule, checks}, or None: drills only when asked with a target
        self.source = source
        self.storage = storage
        self.schedule = schedule
        self.timezone = timezone
        self.retention = retention
        self.collections = collections
        self.status = ACTIVE
        self.snapshot_ids: list[UUID] = []
        self.rebuilds = 0
        self.active_since: datetime = self.created_on
        self.last_slot: datetime | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> BackupPolicy:
        """The repository deep-copies cached aggregates on every read. Snapshot ids are
        immutable UUIDs, so their list is copied shallowly: copying each id made every
        command O(snapshots of the policy) and dominated command time (see BENCHMARKS)."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = list(value) if key == "snapshot_ids" else copy.deepcopy(value, memo)
        return clone

    def _require_live(self, action: str) -> None:
        if self.status == DELETED:
            raise InvalidTransition(f"cannot {action} policy {self.name!r}: it is deleted")

    def edit(self, changes: dict[str, Any], actor: str) -> bool:
        """Records only the fields that really change, with old and new values."""
        self._require_live("edit")
        diff = {
            key: {"old": getattr(self, key), "new": value}
            for key, value in changes.items()
            if key in EDITABLE_FIELDS and getattr(self, key) != value
        }
        if not diff:
            return False
        self._edited(diff, actor)
        return True

    @event("PolicyEdited")
    def _edited(self, changes: dict[str, dict[str, Any]], actor: str) -> None:
        for key, pair in changes.items():
            setattr(self, key, pair["new"])

    def stop(self, actor: str) -> None:
        self._require_live("stop")
        if self.status == STOPPED:
            raise InvalidTransition(f"policy {self.name!r} is already stopped")
        self._stopped(actor)

    @event("PolicyStopped")
    def _stopped(self, actor: str) -> None:
        self.status = STOPPED

    @event("PolicyResumed")
    def _resumed(self, actor: str) -> None:
        self.status = ACTIVE
        self.active_since = self.modified_on

    def take_snapshot(self, snapshot_id: UUID, trigger: str, actor: str) -> int:
        """Numbers the new snapshot; taking one re-activates a stopped policy."""
        self._require_live("take a snapshot of")
        if self.status == STOPPED:
            self._resumed(actor)
        self._snapshot_taken(snapshot_id, len(self.snapshot_ids) + 1, trigger, actor, None)
        return len(self.snapshot_ids)

    def schedule_snapshot(self, snapshot_id: UUID, slot: datetime) -> int:
        """One run per slot: a slot at or before the last one, or before the policy became
        active, is refused, so schedulers racing or catching up cannot double it."""
        self._require_live("schedule")
        if self.status != ACTIVE or not self.schedule:
            raise InvalidTransition(f"policy {self.name!r} is not scheduled")
        if (self.last_slot and slot <= self.last_slot) or slot < self.active_since:
            raise InvalidTransition(f"slot {slot.isoformat()} of policy {self.name!r} is not due")
        self._snapshot_taken(snapshot_id, len(self.snapshot_ids) + 1, "schedule", SCHEDULER_ACTOR, slot)
        return len(self.snapshot_ids)

    def import_snapshot(self, snapshot_id: UUID, actor: str) -> int:
        """Numbers an archive found in storage; unlike taking one, it resumes nothing."""
        self._require_live("import a snapshot into")
        self._snapshot_taken(snapshot_id, len(self.snapshot_ids) + 1, "import", actor, None)
        return len(self.snapshot_ids)

    class SnapshotTaken(TimedAggregate.Event):
        """v2 added the schedule slot a scheduled snapshot belongs to."""

        snapshot_id: UUID
        sequence: int
        trigger: str
        actor: str
        slot: datetime | None
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["slot"] = None

    @event(SnapshotTaken)
    def _snapshot_taken(
        self, snapshot_id: UUID, sequence: int, trigger: str, actor: str, slot: datetime | None
    ) -> None:
        self.snapshot_ids.append(snapshot_id)
        if slot is not None:
            self.last_slot = slot

    def rebuild(self, stopped_snapshot_ids: list[UUID], actor: str) -> None:
        self._require_live("rebuild")
        self._rebuilt(stopped_snapshot_ids, actor)

    @event("PolicyRebuilt")
    def _rebuilt(self, stopped_snapshot_ids: list[UUID], actor: str) -> None:
        if self.status != ACTIVE:
            self.active_since = self.modified_on
        self.status = ACTIVE
        self.rebuilds += 1

    def delete(self, keep_files: bool, actor: str) -> None:
        self._require_live("delete")
        self._deleted(keep_files, actor)

    @event("PolicyDeleted")
    def _deleted(self, keep_files: bool, actor: str) -> None:
        self.status = DELETED


def name_claim_id(name: str) -> UUID:
    """Deterministic id, so two writers claiming one name collide on the same stream."""
    return uuid5(NAMESPACE_URL, "snapledger:policy-name:" + name.lower())


class PolicyNameClaim(Aggregate):
    """Holds a policy name for one live policy; version conflicts make claims exclusive."""

    @staticmethod
    def create_id(name: str, policy_id: UUID) -> UUID:
        return name_claim_id(name)

    @event("PolicyNameClaimed")
    def __init__(self, name: str, policy_id: UUID) -> None:
        self.name = name
        self.policy_id: UUID | None = policy_id

    def claim(self, policy_id: UUID) -> None:
        self._claimed(policy_id)

    @event("PolicyNameReclaimed")
    def _claimed(self, policy_id: UUID) -> None:
        self.policy_id = policy_id

    def release(self) -> None:
        if self.policy_id is not None:
            self._released(self.policy_id)

    @event("PolicyNameReleased")
    def _released(self, policy_id: UUID) -> None:
        self.policy_id = None
