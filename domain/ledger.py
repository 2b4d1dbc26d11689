"""The event store's plumbing every command uses: loading aggregates, committing
several in one transaction, request keys, and retries under optimistic concurrency."""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.errors import Conflict, DomainError, InvalidValue, NotFound
from domain.idempotency import RequestKey, RequestKeyRecord
from domain.policy import BackupPolicy, PolicyNameClaim, name_claim_id
from domain.restore import Restore
from domain.snapshot import Snapshot

A = TypeVar("A", bound=Aggregate)


COMMAND_ATTEMPTS = 6


@dataclass(frozen=True)
class Catalog:
    """Names configured by the operator; the domain checks references against them."""

    sources: frozenset[str] = frozenset()
    storages: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    existing_choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per target
    source_kinds: dict[str, str] = field(default_factory=dict)  # what each source is
    target_kinds: dict[str, str] = field(default_factory=dict)  # what each restore target is


@dataclass(frozen=True)
class Outcome:
    """What a command answers: the aggregate it touched and the last position written."""

    id: UUID
    position: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """As the API answers a command (and the CLI's -o json): ids as text."""
        body: dict[str, Any] = {"id": str(self.id), "position": self.position}
        body.update({k: str(v) if isinstance(v, UUID) else v for k, v in self.extra.items()})
        return body


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_ref(value: object, names: frozenset[str], field_name: str, kind: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{field_name} must name a configured {kind}", field_name)
    if value not in names:
        known = ", ".join(sorted(names)) or "none"
        raise InvalidValue(f"unknown {kind} {value!r} (configured: {known})", field_name)
    return value


def check_actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise InvalidValue("actor must be a non-empty name of at most 200 characters", "actor")
    return actor.strip()


def check_mapping(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() and "/" not in v and v not in (".", "..")
        for k, v in value.items()
    ):
        raise InvalidValue("mapping must map collection names to new names", "mapping")
    return dict(value)


class Written:
    """Aggregates as this process's optimistic commands last wrote them: each is owned by
    whoever takes it (taking removes it), so no two threads ever share one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, uid: UUID) -> Any:
        with self._lock:
            return self._items.pop(uid, None)

    def put(self, uid: UUID, aggregate: Aggregate) -> None:
        with self._lock:
            self._items[uid] = aggregate
            self._items.move_to_end(uid)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Ledger(Application[UUID]):
    """What the command groups share; `Snapledger` (domain/application.py) composes them."""

    def __init__(self, env: dict[str, str] | None = None, catalog: Catalog | None = None):
        super().__init__(env)
        self.catalog = catalog or Catalog()
        self._attempt = threading.local()  # .optimistic: trusts the cache; .key: RequestKey
        self._written = Written(1000)

    def _get(self, cls: type[A], aggregate_id: UUID | str, what: str) -> A:
        try:
            uid = aggregate_id if isinstance(aggregate_id, UUID) else UUID(str(aggregate_id))
        except ValueError:
            raise NotFound(f"{what} {aggregate_id!r} not found", "id") from None
        aggregate = self._take_cached(uid)
        if aggregate is None:
            try:
                aggregate = self.repository.get(uid)
            except AggregateNotFoundError:
                raise NotFound(f"{what} {uid} not found", "id") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {uid} not found", "id")
        return aggregate

    def get_policy(self, policy_id: UUID | str) -> BackupPolicy:
        return self._get(BackupPolicy, policy_id, "policy")

    def get_snapshot(self, snapshot_id: UUID | str) -> Snapshot:
        return self._get(Snapshot, snapshot_id, "snapshot")

    def get_restore(self, restore_id: UUID | str) -> Restore:
        return self._get(Restore, restore_id, "restore")

    def record(self, *aggregates: Aggregate, also: tuple[Aggregate, ...] = ()) -> int:
        """Appends pending events atomically; IntegrityError means someone else wrote first.
        `also` is saved in the same transaction but kept out of the command cache."""
        recordings = self.save(*aggregates, *also)
        optimistic = getattr(self._attempt, "optimistic", False)
        for aggregate in aggregates:
            if optimistic:  # the command's own objects, current as of this write
                self._written.put(aggregate.id, aggregate)
            else:  # a copy kept from an earlier command is now behind: forget it
                self._written.take(aggregate.id)
        if recordings:
            return max(r.notification.id for r in recordings)
        return self.recorder.max_notification_id() or 0  # nothing new: where the log stands

    def _exists(self, aggregate_id: UUID) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def _commit(self, subject: UUID, *aggregates: Aggregate, extra: dict[str, Any] | None = None) -> Outcome:
        """Records a command's changes and, under a request key, its answer with them: one
        transaction, so a key is recorded exactly when the write happened."""
        extra = extra or {}
        key: RequestKey | None = getattr(self._attempt, "key", None)
        also: tuple[Aggregate, ...] = ()
        if key is not None:
            plain = {k: str(v) if isinstance(v, UUID) else v for k, v in extra.items()}
            answer = {"id": str(subject), "extra": plain}
            also = (RequestKeyRecord(key.key, key.actor, key.fingerprint, key.command, answer),)
        return Outcome(subject, self.record(*aggregates, also=also), extra)

    def keyed(self, key: RequestKey | None, command: Callable[..., Outcome], *args: Any) -> Outcome:
        """Runs a command at most once per request key: a key already recorded answers the
        first outcome (with `replayed`); a key that loses a race to a concurrent attempt
        under the same key answers the winner's outcome instead of its own error."""
        if key is None:
            return command(*args)
        if key.given and (first := self.answered(key)) is not None:
            return first
        self._attempt.key = key
        try:
            return command(*args)
        except DomainError:
            if (first := self.answered(key)) is not None:
                return first
            raise
        finally:
            self._attempt.key = None

    def answered(self, key: RequestKey) -> Outcome | None:
        """The first outcome recorded under this key, or None; the same key on another
        request is refused."""
        try:
            record: Aggregate = self.repository.get(key.record_id)
        except AggregateNotFoundError:
            return None
        assert isinstance(record, RequestKeyRecord)
        record.check_same(key.fingerprint)
        position = self.recorder.max_notification_id() or 0
        return Outcome(UUID(record.answer["id"]), position, {**record.answer["extra"], "replayed": True})

    def _take_cached(self, uid: UUID) -> Any:
        """In an optimistic attempt, the aggregate as this process last wrote it, taken out
        of `_written` (no read, no copy: the command owns it; `record` puts it back);
        otherwise None. The repository's own cache is left alone: other threads hold its
        objects while fast-forwarding them."""
        if not getattr(self._attempt, "optimistic", False):
            return None
        return self._written.take(uid)

    def _retrying(self, command: Callable[[], Outcome], optimistic: bool = False) -> Outcome:
        """Re-runs a command on a version conflict: it re-reads state, so it stays correct.

        `optimistic` (for commands that write every aggregate they read) first runs it on
        this process's cached aggregates without reading the store: if another process
        wrote since, the append's version check fails and the command re-runs on fresh
        reads. Any other error of that first attempt is re-decided on fresh reads too, so a
        stale cache can cost a retry but never an answer."""
        if optimistic:
            self._attempt.optimistic = True
            try:
                return command()
            except (IntegrityError, DomainError):
                pass
            finally:
                self._attempt.optimistic = False
        for attempt in range(COMMAND_ATTEMPTS):
            try:
                return command()
            except IntegrityError:
                key = getattr(self._attempt, "key", None)
                if key is not None and (first := self.answered(key)) is not None:
                    return first  # a concurrent attempt under this key wrote first
                if attempt == COMMAND_ATTEMPTS - 1:
                    raise Conflict("the record changed while the command ran; retry") from None
                time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))  # de-synchronise racers
        raise AssertionError("unreachable")

    def _claim_name(self, name: str, policy_id: UUID) -> PolicyNameClaim:
        try:
            claim: Aggregate = self.repository.get(name_claim_id(name))
        except AggregateNotFoundError:
            return PolicyNameClaim(name=name, policy_id=policy_id)
        assert isinstance(claim, PolicyNameClaim)
        if claim.policy_id is not None and claim.policy_id != policy_id:
            raise Conflict(f"a live policy is already named {name!r}", "name")
        claim.claim(policy_id)
        return claim
