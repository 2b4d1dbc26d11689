"""Drill aggregate: one run that proves a snapshot restores. It restores the snapshot into a
throw-away place on a drill target (a fresh database, or fresh database names), checks it
row for row against the archive, runs the policy's checks, measures the time to restore
(RTO) and always removes the scratch copy.

A drill is leased and fenced like a snapshot or a restore (domain/run.py): a worker that
dies mid-drill loses its lease, and the next claim removes what the dead attempt left
before it starts again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import event

from domain.base import TimedAggregate
from domain.errors import InvalidTransition
from domain.run import COMPLETED, DEFAULT_LEASE_SECONDS, FAILED, REQUESTED, RUNNING, STOPPED, RunState

PASSED = COMPLETED  # a drill's success is a run's completion, as the task queue sees it
SCRATCH_PREFIX = "snapledger_drill_"


def scratch_name(drill_id: UUID) -> str:
    """The throw-away place's name: prefixed, so it is never a source's and the janitor
    knows it for a drill's."""
    return f"{SCRATCH_PREFIX}{drill_id.hex[:16]}"


def scheduled_drill_id(policy_id: UUID, slot: datetime) -> UUID:
    """One drill per schedule slot: every scheduler appends the same id, one wins."""
    return uuid5(NAMESPACE_URL, f"snapledger:drill:{policy_id}:{slot.isoformat()}")


class Drill(RunState, TimedAggregate):
    kind = "drill"

    @staticmethod
    def create_id(policy_id: UUID, slot: datetime | None = None, **_: Any) -> UUID:
        return scheduled_drill_id(policy_id, slot) if slot is not None else uuid4()

    @event("DrillRequested")
    def __init__(
        self,
        policy_id: UUID,
        snapshot_id: UUID,
        sub_name: str,
        storage: str,
        archive_key: str,
        target: str,
        checks: list[str],
        actor: str,
        slot: datetime | None = None,
    ) -> None:
        """Copies what it needs of the snapshot at request time, as a restore does.
        `slot`: the drill schedule's slot it was taken for (None: asked for)."""
        self.slot = slot
        self.policy_id = policy_id
        self.snapshot_id = snapshot_id
        self.sub_name = sub_name
        self.storage = storage
        self.archive_key = archive_key
        self.target = target
        self.checks = list(checks)
        self.scratch = scratch_name(self.id)
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
        self.rto_seconds: float | None = None
        self.reason: str | None = None
        self.result: dict[str, Any] | None = None

    def start(self, worker: str, task_name: str, lease_seconds: int, now: datetime) -> None:
        self._check_claimable(now)
        self._started(worker, task_name, self.attempt + 1, lease_seconds)

    @event("DrillStarted")
    def _started(self, worker: str, task_name: str, attempt: int, lease_seconds: int) -> None:
        self._begin(worker, task_name, attempt, lease_seconds)

    def heartbeat(self) -> None:
        self._require("renew the lease of", RUNNING)
        self._heartbeat()

    @event("DrillHeartbeat")
    def _heartbeat(self) -> None:
        self.last_beat = self.modified_on

    def progress(self, items: int, bytes: int, percent: float, collection: str | None, at: datetime) -> None:
        self._require("record progress of", RUNNING)
        self._progressed(items, bytes, round(percent, 2), collection, self.elapsed_until(at))

    @event("DrillProgressed")
    def _progressed(
        self, items: int, bytes: int, percent: float, collection: str | None, elapsed_seconds: float
    ) -> None:
        self.items, self.bytes, self.percent = items, bytes, percent
        self.last_beat = self.modified_on

    def passed(self, rto_seconds: float, result: dict[str, Any], finished_at: datetime) -> None:
        """`result`: per collection the rows restored and whether their content digest
        equals the archive's, each check's outcome, and that the scratch copy is gone."""
        self._require("pass", RUNNING)
        self._passed(round(rto_seconds, 3), result, self.elapsed_until(finished_at))

    @event("DrillPassed")
    def _passed(self, rto_seconds: float, result: dict[str, Any], elapsed_seconds: float) -> None:
        self.status = PASSED
        self.rto_seconds = rto_seconds
        self.result = result

    def fail(self, reason: str, finished_at: datetime) -> None:
        self._require("fail", RUNNING)
        self._failed(reason, self.elapsed_until(finished_at))

    @event("DrillFailed")
    def _failed(self, reason: str, elapsed_seconds: float) -> None:
        self.status = FAILED
        self.reason = reason

    def request_stop(self, actor: str) -> None:
        self._require("stop", REQUESTED, RUNNING)
        if self.status == REQUESTED:
            self._stopped(actor, 0.0)
        elif self.stop_requested:
            raise InvalidTransition(f"drill {self.sub_name} is already stopping")
        else:
            self._stop_requested(actor)

    @event("DrillStopRequested")
    def _stop_requested(self, actor: str) -> None:
        self.stop_requested = True

    def acknowledge_stop(self, finished_at: datetime) -> None:
        self._require("acknowledge stop of", RUNNING)
        self._stopped("worker", self.elapsed_until(finished_at))

    @event("DrillStopped")
    def _stopped(self, actor: str, elapsed_seconds: float) -> None:
        self.status = STOPPED


__all__ = ["Drill", "PASSED", "FAILED", "SCRATCH_PREFIX", "scratch_name"]
