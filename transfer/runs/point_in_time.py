"""A restore to a moment: the snapshot, then its captured changes up to one commit.

The plan is made from what the events record (the snapshot's consistent position and the
capture's segments) and says, before anything is written, which segments are read and
which commit the restore ends at; a moment past what is archived, or before the snapshot,
is refused. Each segment is believed only once its checksum matches (service/capture.py).
The replay applies whole source transactions, so the target passes only through states the
source was in; the consistency check counts the changes replayed against the segments'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from transfer.errors import TargetError
from transfer.sources.postgres.capture import lsn_value
from transfer.sources.postgres.connection import conninfo
from transfer.sources.postgres.replay import ChangeReplayer, up_to

ReadSegment = Callable[[dict[str, Any]], list[Any]]  # PostgreSQL's Transaction, or OplogTransaction


class PointInTimeError(ValueError):
    """The moment asked for cannot be restored from what is archived (names the bounds)."""


@dataclass
class ReplayPlan:
    """The segments to replay, read one at a time when replayed: a window of a day holds
    millions of changes, which a plan must not hold in memory. Only the last segment is
    read to plan, for the exact end commit; the ones before it end before the moment."""

    from_position: str  # the snapshot's consistent point
    segments: list[dict[str, Any]]  # as ChangesArchived records them, in order
    read: ReadSegment
    to_lsn: str | None = None
    to_time: datetime | None = None
    end: dict[str, Any] | None = None  # the last commit replayed: lsn, time, xid
    transactions: int = 0
    changes: int = 0

    def each(self) -> Iterator[Any]:
        for segment in self.segments:
            yield from up_to(self.read(segment), to_lsn=self.to_lsn, to_time=self.to_time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_position": self.from_position,
            "segments": [s["key"] for s in self.segments],
            "end": self.end,
            "transactions": self.transactions,
            "changes": self.changes,
        }


def plan(
    from_position: str,
    segments: list[dict[str, Any]],
    read: ReadSegment,
    to_lsn: str | None = None,
    to_time: datetime | None = None,
    snapshot_time: datetime | None = None,
    checked: tuple[str, str] | None = None,
) -> ReplayPlan:
    """The segments a restore to `to_lsn` or `to_time` reads, read and cut at the exact
    commit. Exactly one of the two is given; `snapshot_time` (when the snapshot's slot was
    made) bounds `to_time` from below; `checked` (the capture's checked position and time)
    is how far past its last segment the capture saw nothing commit."""
    if (to_lsn is None) == (to_time is None):
        raise PointInTimeError("give one of to_time and to_lsn")
    if to_time is not None and snapshot_time is not None and to_time < snapshot_time:
        raise PointInTimeError(
            f"{to_time.isoformat()} is before the snapshot ({snapshot_time.isoformat()}): "
            "restore an older one"
        )
    if to_lsn is not None and lsn_value(to_lsn) < lsn_value(from_position):
        raise PointInTimeError(f"{to_lsn} is before the snapshot's position {from_position}")
    position = from_position
    chosen: list[dict[str, Any]] = []
    for segment in segments:
        if segment["from_lsn"] != position:
            raise PointInTimeError(
                f"the captured changes have a gap: a segment starts at {segment['from_lsn']}, "
                f"the one before ends at {position}"
            )
        chosen.append(segment)
        position = segment["to_lsn"]
        if _covers(segment.get("until_lsn") or segment["to_lsn"], segment.get("until_time"), to_lsn, to_time):
            break
        if to_time is not None and datetime.fromisoformat(segment["last_commit"]) >= to_time:
            break
    else:
        if checked is None or not _covers(checked[0], checked[1], to_lsn, to_time):
            last = segments[-1] if segments else None
            until_lsn, until_time = checked or (
                (last.get("until_lsn") or last["to_lsn"], last.get("until_time") or last["last_commit"])
                if last
                else (from_position, "the snapshot")
            )
            asked = to_lsn or (to_time.isoformat() if to_time else "")
            raise PointInTimeError(
                f"changes are archived up to {until_time} ({until_lsn}); {asked} is past them"
            )
    result = ReplayPlan(from_position, chosen, read, to_lsn, to_time)
    if not chosen:
        return result
    whole = chosen[:-1]  # each ends before the moment: their records' counts are exact
    kept = up_to(read(chosen[-1]), to_lsn=to_lsn, to_time=to_time)
    result.transactions = sum(s["transactions"] for s in whole) + len(kept)
    result.changes = sum(s["items"] for s in whole) + sum(len(t.changes) for t in kept)
    if kept:
        result.end = {"lsn": kept[-1].commit_lsn, "time": kept[-1].commit_time, "xid": kept[-1].xid}
    elif whole:
        result.end = {"lsn": whole[-1]["to_lsn"], "time": whole[-1]["last_commit"], "xid": None}
    return result


def _covers(lsn: str, at: str | None, to_lsn: str | None, to_time: datetime | None) -> bool:
    if to_lsn is not None:
        return lsn_value(lsn) >= lsn_value(to_lsn)
    return at is not None and to_time is not None and datetime.fromisoformat(at) >= to_time


def replay_oplog(
    target: Any, replay_plan: ReplayPlan, selection: list[str], mapping: dict[str, str], databases: list[str]
) -> dict[str, Any]:
    """Applies the plan's oplog entries to a restored MongoDB target, whole transactions in
    order, under the restore's selection and renames, and checks every change of them was
    applied or skipped (outside the selection, or of a database the capture did not read)."""
    replayer = target.replay(replay_plan.each(), selection, mapping, databases)
    expected = replay_plan.changes
    if replayer.applied + replayer.skipped != expected:
        raise TargetError(f"replayed {replayer.applied + replayer.skipped} of {expected} captured changes")
    return {
        "transactions": replay_plan.transactions,
        "changes": replayer.applied,
        "skipped": replayer.skipped,
        "end": replay_plan.end,
    }


def replay(
    url: str, password: str | None, replay_plan: ReplayPlan, mapping: dict[str, str] | None = None
) -> dict[str, Any]:
    """Applies the plan's transactions to a restored PostgreSQL database and checks that
    every change of them was applied (or skipped as outside the restore's selection)."""
    with psycopg.connect(conninfo(url, password), autocommit=True, application_name="snapledger") as conn:
        replayer = ChangeReplayer(conn, mapping)
        for txn in replay_plan.each():
            replayer.apply(txn)
        moved = replayer.catch_up_sequences()
    expected = replay_plan.changes
    if replayer.applied + replayer.skipped != expected:
        raise TargetError(f"replayed {replayer.applied + replayer.skipped} of {expected} captured changes")
    return {
        "transactions": replayer.transactions,
        "changes": replayer.applied,
        "skipped": replayer.skipped,
        "sequences": moved,
        "end": replay_plan.end,
    }
