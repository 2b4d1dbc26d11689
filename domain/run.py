"""What snapshots and restores share as runs: states, elapsed time and the worker's lease.

A worker holds a run while its lease is fresh; every worker event (started, progressed,
heartbeat) renews it. Once it lapses another worker may claim the run again: the claim is
an append at the run's current version, so the old worker's next append conflicts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.errors import InvalidTransition

REQUESTED, RUNNING, COMPLETED, FAILED, STOPPED, DELETED = (
    "requested",
    "running",
    "completed",
    "failed",
    "stopped",
    "deleted",
)
PARTIALLY_FAILED = "partially_failed"  # some collections archived, the others named with reasons
FINISHED = (COMPLETED, PARTIALLY_FAILED, FAILED, STOPPED)
HAS_ARCHIVE = (COMPLETED, PARTIALLY_FAILED)  # the states whose archive can be restored and must be removed
# Every state a snapshot can be in, in the order of its life; a restore is never deleted.
RUN_STATUSES = (REQUESTED, RUNNING, COMPLETED, PARTIALLY_FAILED, FAILED, STOPPED, DELETED)
RESTORE_STATUSES = RUN_STATUSES[:-1]
DEFAULT_LEASE_SECONDS = 60


def upcast_started_v1_v2(state: dict[str, Any]) -> None:
    """Runs started before leases existed get the default lease."""
    state["lease_seconds"] = DEFAULT_LEASE_SECONDS


class RunState:
    kind = "run"
    status: str
    sub_name: str
    started_at: datetime | None
    last_beat: datetime | None
    lease_seconds: int
    stop_requested: bool
    worker: str | None
    task_name: str | None
    attempt: int

    def _require(self, action: str, *states: str) -> None:
        if self.status not in states:
            raise InvalidTransition(f"cannot {action} {self.kind} {self.sub_name}: it is {self.status}")

    def elapsed_until(self, when: datetime) -> float:
        return round((when - self.started_at).total_seconds(), 3) if self.started_at else 0.0

    @property
    def lease_expires_at(self) -> datetime | None:
        if self.status != RUNNING or self.last_beat is None:
            return None
        return self.last_beat + timedelta(seconds=self.lease_seconds)

    def lease_expired(self, now: datetime) -> bool:
        expires = self.lease_expires_at
        return expires is not None and now > expires

    def _check_claimable(self, now: datetime) -> None:
        if self.status == RUNNING and not self.lease_expired(now):
            raise InvalidTransition(f"{self.kind} {self.sub_name} is held until {self.lease_expires_at}")
        self._require("start", REQUESTED, RUNNING)

    def _begin(self, worker: str, task_name: str, attempt: int, lease_seconds: int) -> None:
        self.status = RUNNING
        self.worker = worker
        self.task_name = task_name
        self.attempt = attempt
        self.lease_seconds = lease_seconds
        self.started_at = self.last_beat = self.modified_on  # type: ignore[attr-defined]
