"""Cron slots in an explicit time zone (pure functions; the scheduler supplies the clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from croniter import croniter


def latest_slot(schedule: str, timezone: str, now: datetime) -> datetime:
    """The most recent slot at or before now: missed slots collapse into one catch-up run."""
    local = now.astimezone(ZoneInfo(timezone))
    if local.second == 0 and local.microsecond == 0 and croniter.match(schedule, local):
        return local.astimezone(UTC)
    return croniter(schedule, local).get_prev(datetime).astimezone(UTC)


def next_slot(schedule: str, timezone: str, after: datetime) -> datetime:
    return croniter(schedule, after.astimezone(ZoneInfo(timezone))).get_next(datetime).astimezone(UTC)


def scheduled_snapshot_id(policy_id: UUID, slot: datetime) -> UUID:
    """Two schedulers deciding on the same slot name the same snapshot, so one append wins."""
    return uuid5(NAMESPACE_URL, f"snapledger:scheduled:{policy_id}:{slot.astimezone(UTC).isoformat()}")
