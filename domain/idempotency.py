"""Request keys: a mutation sent twice under one key acts once.

A key is recorded as its own small aggregate, appended in the same transaction as the
command's events, so "the write happened" and "the key is recorded" are one fact: a retry
finds the record and answers the first outcome; a retry that races the first attempt
fails its append on the record's version and then finds it. Keys are scoped to the actor
(two clients choosing the same key never see each other's answers) and bound to the
request they came with: the same key on a different request is refused, not replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import TimedAggregate
from domain.errors import Conflict, InvalidValue

MAX_KEY = 255


def key_record_id(actor: str, key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:request-key:{actor}\n{key}")


def check_key(value: str) -> str:
    if not 1 <= len(value) <= MAX_KEY or not value.isascii() or not value.isprintable():
        raise InvalidValue(
            f"Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters", "Idempotency-Key"
        )
    return value


@dataclass(frozen=True)
class RequestKey:
    """A mutation's key, who sent it, and a digest of the request it names."""

    key: str
    actor: str
    fingerprint: str  # sha256 of method, path, query and body
    command: str  # e.g. "POST /api/v1/policies": for an operator reading the log
    given: bool = True  # False: the server chose it (answered in the Idempotency-Key header)

    @property
    def record_id(self) -> UUID:
        return key_record_id(self.actor, self.key)


class RequestKeyRecord(TimedAggregate):
    @staticmethod
    def create_id(key: str, actor: str, fingerprint: str, command: str, answer: dict[str, Any]) -> UUID:
        return key_record_id(actor, key)

    @event("RequestKeyRecorded")
    def __init__(self, key: str, actor: str, fingerprint: str, command: str, answer: dict[str, Any]) -> None:
        self.key = key
        self.actor = actor
        self.fingerprint = fingerprint
        self.command = command
        self.answer = answer  # {"id": str, "extra": {...}}: what the command answered

    def check_same(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise Conflict(  # 409: the key's record and this request disagree
                f"Idempotency-Key {self.key!r} was used for a different request ({self.command}); "
                "use a new key for a new request",
                "Idempotency-Key",
            )
