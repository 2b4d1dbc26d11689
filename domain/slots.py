"""Run slots: at most one snapshot per policy and one restore per target at a time.

A slot records which run holds it. Taking it is an append at the slot's version, in the
same transaction as the run's start, so two workers cannot both win. A slot whose holder
finished, or whose holder's lease lapsed, is free: no release event is needed.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import TimedAggregate


def slot_id(key: str) -> UUID:
    return uuid5(NAMESPACE_URL, "snapledger:slot:" + key)


class RunSlot(TimedAggregate):
    @staticmethod
    def create_id(key: str, holder: UUID, kind: str) -> UUID:
        return slot_id(key)

    @event("RunSlotTaken")
    def __init__(self, key: str, holder: UUID, kind: str) -> None:
        self.key = key
        self.holder = holder
        self.kind = kind

    def take(self, holder: UUID, kind: str) -> None:
        if holder != self.holder:
            self._taken(holder, kind)

    @event("RunSlotHandedOver")
    def _taken(self, holder: UUID, kind: str) -> None:
        self.holder = holder
        self.kind = kind
