"""One step of a MongoDB policy's continuous capture: the oplog entries after the capture's
resume point, archived as the next segment and recorded (service/capture.py's order, with no
release: the oplog is the server's, capped, and holds nothing for us).

What a PostgreSQL slot's retained WAL is there, the oplog's room is here: a capture behind by
half of what the oplog holds raises the alarm, and one whose resume point the oplog no longer
holds has lost changes, so it fails loudly and the next snapshot starts a new window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.capture import (
    ArchivingTask,
    CaptureFailed,
    CaptureRecorder,
    CaptureSettings,
    StepResult,
)
from transfer.archive.crypto import Keyring, Signer
from transfer.sources.mongodb import capture
from transfer.sources.mongodb.capture import OplogTransaction, position_value
from transfer.storage.base import Storage
from transfer.storage.layout import changes_key

ALARM_FLOOR_SECONDS = 10  # behind by less than this, the capture is keeping up


class OplogCaptureTask(ArchivingTask):
    def __init__(
        self,
        client: Any,
        databases: list[str] | None,
        policy: str,
        storage: Storage,
        recorder: CaptureRecorder,
        checked_position: Callable[[], str],
        settings: CaptureSettings | None = None,
        keyring: Keyring | None = None,
        capture_id: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        lock_until: Callable[[], datetime] | None = None,
        signer: Signer | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            policy, storage, recorder, settings, keyring, capture_id, now, lock_until, signer, identity
        )
        self.client = client
        self.databases = databases or None  # None: every database but the server's own
        self.checked_position = checked_position

    def _resume(self) -> str:
        """Where the next read starts: the last segment's end, or the last checked position
        past it (nothing captured changed between them, and a quiet database's last segment
        may have left the oplog while other databases wrote)."""
        position, checked = self.recorder.position(), self.checked_position()
        return checked if position_value(checked) > position_value(position) else position

    def check(self) -> tuple[int | None, str | None]:
        newest, _ = capture.horizon(self.client)
        return None, self._alarm(newest)

    def _alarm(self, newest: str) -> str | None:
        """Behind by half of what the oplog spans. The oplog's start is read only once the
        capture is ALARM_FLOOR_SECONDS behind: a capture that keeps up costs no scan of it."""
        behind = capture.parse_position(newest).time - capture.parse_position(self._resume()).time
        if behind < ALARM_FLOOR_SECONDS:
            return None
        room = capture.headroom(self.client, self._resume())
        if room is None:
            return "the source's oplog is empty"
        behind_s, holds = room
        if holds > 0 and behind_s >= holds / 2:
            return (
                f"the capture is {behind_s:.0f} s behind the newest oplog entry, and the oplog holds "
                f"{holds:.0f} s: it is not keeping up, and is lost when the oplog rolls past it"
            )
        return None

    def step(self) -> StepResult:
        position, resume = self.recorder.position(), self._resume()
        until_lsn, until_time = capture.horizon(self.client)  # before the read: all of it is in there
        alarm = self._alarm(until_lsn)
        try:
            fresh, full = capture.read(self.client, resume, self.databases, self.settings.max_changes)
        except capture.RolledOver as e:
            reason = f"{e}; the next snapshot starts a new window (give the oplog more room)"
            self.recorder.failed(reason)
            raise CaptureFailed(reason) from None
        batch, reshaped = self._replayable(self._bounded(fresh))
        if not batch:
            if position_value(until_lsn) < position_value(resume):
                until_lsn = resume
            self._idle(until_lsn, until_time, full, reshaped)
            return StepResult(None, None, None, alarm, more=False, reshaped=reshaped)
        segment = capture.segment(position, batch)
        key = changes_key(self.policy, segment.from_lsn, segment.to_lsn)
        waiting = fresh[len(batch) :]
        until = {}
        if not waiting and not full and reshaped is None:  # nothing else was written up to the horizon
            until = {
                "until_lsn": max(until_lsn, segment.to_lsn, key=position_value),
                "until_time": max(until_time, segment.last_commit, key=datetime.fromisoformat),
            }
        facts = self._store(key, segment, until)
        self.recorder.archived(facts)
        lag = self._lag_since(waiting[0].commit_time if waiting else None)
        return StepResult(facts, None, lag, alarm, more=bool(waiting) or full, reshaped=reshaped)

    def _bounded(self, transactions: list[OplogTransaction]) -> list[OplogTransaction]:
        out, size = [], 0
        for txn in transactions:
            out.append(txn)
            size += len(txn.bson())  # the bytes the segment will hold, encoded once
            if size >= self.settings.segment_bytes:
                break
        return out

    def _replayable(self, batch: list[OplogTransaction]) -> tuple[list[OplogTransaction], str | None]:
        """The transactions before the first one a replay could not apply: the window ends
        there, and a new snapshot, taken after it, starts the next."""
        for index, txn in enumerate(batch):
            why = capture.unreplayable(txn, self.databases)
            if why is not None:
                return batch[:index], f"{why}; the window ends before it and a new snapshot starts the next"
        return batch, None
