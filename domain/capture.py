"""Capture aggregate: the stream of a policy's source changes between its snapshots.

One capture per policy window: it starts at a snapshot's exact consistent point and records
one event per archived segment, never one per change, so the events of an hour of capture
are bounded by its segments. Segments are contiguous: each starts where the last ended,
which is how a re-claimed capture, or a second worker, is kept from archiving a range twice
or leaving a hole.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import TimedAggregate
from domain.errors import InvalidTransition

CAPTURING = "capturing"
CAPTURE_FAILED = "failed"
CAPTURE_STOPPED = "stopped"


def capture_id(policy_id: UUID, snapshot_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:capture:{policy_id}:{snapshot_id}")


class Capture(TimedAggregate):
    @staticmethod
    def create_id(policy_id: UUID, snapshot_id: UUID, **_: Any) -> UUID:
        return capture_id(policy_id, snapshot_id)

    @event("CaptureStarted")
    def __init__(
        self,
        policy_id: UUID,
        snapshot_id: UUID,
        source: str,
        storage: str,
        slot: str,
        from_position: str,
        from_time: str | None = None,
    ) -> None:
        """`from_position` is the snapshot's consistent point (PostgreSQL: an LSN; MongoDB:
        an oplog ts): the first change captured is the first one the snapshot does not
        hold. `from_time`: that point's time, where known (older events lack it)."""
        self.policy_id = policy_id
        self.snapshot_id = snapshot_id
        self.source = source
        self.storage = storage
        self.slot = slot
        self.from_position = from_position
        self.from_time = from_time
        self.position = from_position  # the end of the last archived segment
        self.status = CAPTURING
        self.reason: str | None = None
        self.segments: list[dict[str, Any]] = []
        self.restorable_until: str | None = None  # the source is restorable up to this time
        self.checked_lsn: str = from_position  # ... and this position
        # The worker that recorded last, and when: the capture's lease. A worker records at
        # least once a segment_seconds while it holds it, so no event is spent on renewals.
        self.holder: str | None = None
        self.held_at: datetime | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Capture:
        """The repository deep-copies cached aggregates on every read, and the capture loop
        reads its capture every tick. A segment's record never changes once appended, so
        the list is copied shallowly: copying each one made a read O(segments), 143 ms at
        20,000 segments (as BackupPolicy's snapshot ids were, see BENCHMARKS)."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = list(value) if key == "segments" else copy.deepcopy(value, memo)
        return clone

    def held_by_another(self, worker: str, now: datetime, lease_seconds: float) -> bool:
        """Whether another worker recorded within the lease: it is still capturing."""
        if self.holder is None or self.holder == worker or self.held_at is None:
            return False
        return (now - self.held_at).total_seconds() < lease_seconds

    def archived(self, segment: dict[str, Any], worker: str | None = None) -> None:
        if self.status != CAPTURING:
            raise InvalidTransition(f"capture is {self.status}: no segment can be archived")
        if segment["from_lsn"] != self.position:
            raise InvalidTransition(
                f"segment starts at {segment['from_lsn']}, but the capture is at {self.position}"
            )
        self._archived(
            **{k: segment[k] for k in SEGMENT_FIELDS},
            plain_sha256=segment.get("plain_sha256"),
            encryption=segment.get("encryption"),
            until_lsn=segment.get("until_lsn"),
            until_time=segment.get("until_time"),
            worker=worker,
            shapes=segment.get("shapes"),
        )

    @event("ChangesArchived")
    def _archived(
        self,
        from_lsn: str,
        to_lsn: str,
        first_commit: str,
        last_commit: str,
        transactions: int,
        items: int,
        bytes: int,  # noqa: A002 - the segment's stored size, as the other records name it
        sha256: str,
        key: str,
        plain_sha256: str | None = None,  # encrypted: the segment's own, inside the stored object
        encryption: dict[str, Any] | None = None,  # algorithm and key id, as a manifest's
        until_lsn: str | None = None,  # nothing else committed up to here (read before the peek)
        until_time: str | None = None,
        worker: str | None = None,  # who holds the capture (its lease)
        shapes: list[dict[str, Any]] | None = None,  # tables first seen here, with their columns
    ) -> None:
        self.holder, self.held_at = worker, self.modified_on
        found = {
            "from_lsn": from_lsn,
            "to_lsn": to_lsn,
            "first_commit": first_commit,
            "last_commit": last_commit,
            "transactions": transactions,
            "items": items,
            "bytes": bytes,
            "sha256": sha256,
            "key": key,
        }
        if encryption is not None:
            found["plain_sha256"] = plain_sha256
            found["encryption"] = encryption
        if until_lsn is not None:
            found["until_lsn"], found["until_time"] = until_lsn, until_time
        if shapes:
            found["shapes"] = shapes
        self.segments.append(found)
        self.position = to_lsn
        self.checked_lsn, self.restorable_until = until_lsn or to_lsn, until_time or last_commit

    def checked(self, lsn: str, at: str, worker: str | None = None) -> None:
        """Nothing committed since the last segment up to `lsn` (at `at`): an idle source
        stays restorable to now. The capture records it at most once a checkpoint interval."""
        if self.status == CAPTURING:
            self._checked(lsn, at, worker)

    @event("CaptureChecked")
    def _checked(self, lsn: str, at: str, worker: str | None = None) -> None:
        self.checked_lsn, self.restorable_until = lsn, at
        self.holder, self.held_at = worker, self.modified_on

    def fail(self, reason: str) -> None:
        if self.status == CAPTURING:
            self._failed(reason)

    @event("CaptureFailed")
    def _failed(self, reason: str) -> None:
        self.status = CAPTURE_FAILED
        self.reason = reason

    def stop(self, reason: str) -> None:
        if self.status == CAPTURING:
            self._stopped(reason)

    @event("CaptureStopped")
    def _stopped(self, reason: str) -> None:
        self.status = CAPTURE_STOPPED
        self.reason = reason

    @property
    def finished_at(self) -> datetime | None:
        return self.modified_on if self.status != CAPTURING else None


SEGMENT_FIELDS = (
    "from_lsn",
    "to_lsn",
    "first_commit",
    "last_commit",
    "transactions",
    "items",
    "bytes",
    "sha256",
    "key",
)
