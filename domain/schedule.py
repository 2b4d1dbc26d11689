"""Cron slots in an explicit time zone (pure functions; the scheduler supplies the clock).

A schedule names wall-clock times, one slot per time, whatever daylight saving does: the
cron expression runs over naive local times (croniter on aware times gave `30 1 * * *` two
slots on a fall-back day), and each is placed on the time line at its first occurrence. A
wall time a spring-forward skips is placed as the offset before the change reads it, one
hour later in the new time (02:30 in New York on that day runs at 03:30).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from croniter import croniter


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def latest_slot(schedule: str, timezone: str, now: datetime) -> datetime:
    """The most recent slot at or before now: missed slots collapse into one catch-up run."""
    zone = ZoneInfo(timezone)
    start = _wall(now, zone).replace(microsecond=0) + timedelta(seconds=1)
    walls = croniter(schedule, start)
    slot = _instant(walls.get_prev(datetime), zone)
    while slot > now:  # a skipped wall time placed after now, or the repeated hour
        slot = _instant(walls.get_prev(datetime), zone)
    return slot


def next_slot(schedule: str, timezone: str, after: datetime) -> datetime:
    zone = ZoneInfo(timezone)
    walls = croniter(schedule, _wall(after, zone))
    slot = _instant(walls.get_next(datetime), zone)
    while slot <= after:  # in the repeated hour, a wall time's first occurrence is behind
        slot = _instant(walls.get_next(datetime), zone)
    return slot


def scheduled_snapshot_id(policy_id: UUID, slot: datetime) -> UUID:
    """Two schedulers deciding on the same slot name the same snapshot, so one append wins."""
    return uuid5(NAMESPACE_URL, f"snapledger:scheduled:{policy_id}:{slot.astimezone(UTC).isoformat()}")
