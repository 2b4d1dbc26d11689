"""Aggregate base whose event bodies can read the event's own time as `modified_on`.

The library sets `modified_on` after applying an event; stamping it first lets a body
record "when this happened" (started_at, active_since) on replay as well as live.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate


class TimedAggregate(Aggregate):
    class Event(Aggregate.Event):
        def mutate(self, aggregate: Any) -> Any:
            if aggregate is not None:
                aggregate.modified_on = self.timestamp
            return super().mutate(aggregate)
