"""A capture's recorder for the tests: the Capture aggregate in memory, as the capture
loop's StoredRecorder holds it in the event store."""

from __future__ import annotations

from typing import Any

from domain.capture import Capture


class Recorder:
    """The Capture aggregate, as the worker's recorder will hold it."""

    def __init__(self, agg: Capture) -> None:
        self.agg = agg
        self.fail_next = False

    def position(self) -> str:
        return self.agg.position

    def archived(self, facts: dict[str, Any]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("event store went away")
        self.agg.archived(facts)

    def failed(self, reason: str) -> None:
        self.agg.fail(reason)

    def checked(self, lsn: str, at: str) -> None:
        self.agg.checked(lsn, at)

    def checked_at(self) -> str | None:
        return self.agg.restorable_until

    def checked_position(self) -> str:
        return self.agg.checked_lsn
