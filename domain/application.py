"""The eventsourcing Application: runs the seed's commands as appends to the event store."""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.errors import Conflict, DomainError, InvalidTransition, InvalidValue, NotFound
from domain.idempotency import RequestKey, RequestKeyRecord
from domain.policy import EDITABLE_FIELDS, SCHEDULER_ACTOR, BackupPolicy, PolicyNameClaim, name_claim_id
from domain.restore import Restore
from domain.schedule import scheduled_snapshot_id
from domain.slots import RunSlot, slot_id
from domain.snapshot import DELETED, HAS_ARCHIVE, REQUESTED, RUNNING, Snapshot
from domain.values import CollectionSelection, Retention, check_cron, check_name, check_timezone

A = TypeVar("A", bound=Aggregate)
COMMAND_ATTEMPTS = 6


@dataclass(frozen=True)
class Catalog:
    """Names configured by the operator; the domain checks references against them."""

    sources: frozenset[str] = frozenset()
    storages: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    existing_choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per target


@dataclass(frozen=True)
class Outcome:
    """What a command answers: the aggregate it touched and the last position written."""

    id: UUID
    position: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedArchive:
    """What a manifest found in storage says about the snapshot that wrote it."""

    manifest: dict[str, Any]
    manifest_sha256: str
    policy_name: str
    source: str
    snapshot_id: UUID | None
    started_at: datetime | None
    finished_at: datetime
    expire_after_seconds: int | None
    verification: str = "unverified"  # signed | encrypted | unverified: how sync could check it


def imported_snapshot_id(storage: str, archive_key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:archive:{storage}:{archive_key}")


def _now() -> datetime:
    return datetime.now(UTC)


def _check_ref(value: object, names: frozenset[str], field_name: str, kind: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{field_name} must name a configured {kind}", field_name)
    if value not in names:
        known = ", ".join(sorted(names)) or "none"
        raise InvalidValue(f"unknown {kind} {value!r} (configured: {known})", field_name)
    return value


def _check_actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise InvalidValue("actor must be a non-empty name of at most 200 characters", "actor")
    return actor.strip()


def _check_mapping(value: object) -> dict[str, str]:
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


class Snapledger(Application[UUID]):
    """Commands for policies, snapshots and restores; optimistic concurrency throughout."""

    name = "Snapledger"

    def __init__(self, env: dict[str, str] | None = None, catalog: Catalog | None = None):
        super().__init__(env)
        self.catalog = catalog or Catalog()
        self._attempt = threading.local()  # .optimistic: trusts the cache; .key: RequestKey
        self._written = Written(1000)

    # ----------------------------------------------------------------- plumbing
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

    # ----------------------------------------------------------------- policies
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

    def _policy_fields(self, data: dict[str, Any], partial: bool) -> dict[str, Any]:
        unknown = sorted(set(data) - set(EDITABLE_FIELDS))
        if unknown:
            raise InvalidValue(f"{unknown[0]} is not a policy field", unknown[0])
        out: dict[str, Any] = {}
        for key in ("name", "source", "storage"):
            if key in data or not partial:
                if key == "name":
                    out[key] = check_name(data.get(key))
                elif key == "source":
                    out[key] = _check_ref(data.get(key), self.catalog.sources, "source", "source")
                else:
                    out[key] = _check_ref(data.get(key), self.catalog.storages, "storage", "storage location")
        if "schedule" in data or not partial:
            out["schedule"] = check_cron(data.get("schedule"))
        if "timezone" in data or not partial:
            out["timezone"] = check_timezone(data.get("timezone"))
        if "retention" in data or not partial:
            out["retention"] = Retention.parse(data.get("retention")).to_dict()
        if "collections" in data or not partial:
            out["collections"] = CollectionSelection.parse(data.get("collections")).to_dict()
        return out

    def create_policy(self, data: dict[str, Any], actor: str) -> Outcome:
        actor = _check_actor(actor)
        fields = self._policy_fields(data, partial=False)

        def command() -> Outcome:
            policy = BackupPolicy(**fields, actor=actor)
            claim = self._claim_name(fields["name"], policy.id)
            return self._commit(policy.id, policy, claim)

        return self._retrying(command)

    def edit_policy(self, policy_id: UUID | str, data: dict[str, Any], actor: str) -> Outcome:
        actor = _check_actor(actor)
        if not data:
            raise InvalidValue("nothing to change: give at least one policy field", None)
        fields = self._policy_fields(data, partial=True)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            old_name = policy.name
            if not policy.edit(fields, actor):
                return Outcome(policy.id, self.recorder.max_notification_id() or 0)
            changed: list[Aggregate] = [policy]
            if policy.name != old_name:
                changed.append(self._claim_name(policy.name, policy.id))
                if policy.name.lower() != old_name.lower():
                    old: PolicyNameClaim = self.repository.get(name_claim_id(old_name))
                    old.release()
                    changed.append(old)
            return self._commit(policy.id, *changed)

        return self._retrying(command)

    def _live_snapshots(self, policy: BackupPolicy) -> list[Snapshot]:
        snaps = (self.get_snapshot(sid) for sid in policy.snapshot_ids)
        return [s for s in snaps if s.status != DELETED]

    def _stop_running(self, policy: BackupPolicy, actor: str) -> list[Snapshot]:
        stopped = []
        for snap in self._live_snapshots(policy):
            if snap.status in (REQUESTED, RUNNING) and not snap.stop_requested:
                snap.request_stop(actor)
                stopped.append(snap)
        return stopped

    def stop_policy(self, policy_id: UUID | str, actor: str) -> Outcome:
        actor = _check_actor(actor)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            policy.stop(actor)
            return self._commit(policy.id, policy, *self._stop_running(policy, actor))

        return self._retrying(command)

    def _new_snapshot(self, policy: BackupPolicy, trigger: str, actor: str) -> Snapshot:
        snapshot_id = uuid4()
        policy.take_snapshot(snapshot_id, trigger, actor)
        return self._snapshot_for(policy, snapshot_id, trigger, actor)

    def _snapshot_for(self, policy: BackupPolicy, snapshot_id: UUID, trigger: str, actor: str) -> Snapshot:
        sequence = len(policy.snapshot_ids)
        now = _now()
        file_name = f"{policy.name}-{now:%Y%m%dT%H%M%SZ}-{snapshot_id.hex[:8]}.tar"
        retention = Retention.from_dict(policy.retention)
        return Snapshot(
            id=snapshot_id,
            policy_id=policy.id,
            policy_name=policy.name,
            sequence=sequence,
            sub_name=f"{policy.name}#{sequence}",
            file_name=file_name,
            archive_key=f"{policy.name}/{file_name}",
            source=policy.source,
            storage=policy.storage,
            collections=policy.collections,
            expire_after_seconds=retention.expire_after_seconds,
            trigger=trigger,
            actor=actor,
        )

    def request_snapshot(self, policy_id: UUID | str, actor: str, trigger: str = "manual") -> Outcome:
        actor = _check_actor(actor)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            snap = self._new_snapshot(policy, trigger, actor)
            return self._commit(snap.id, policy, snap, extra={"policy_id": policy.id})

        return self._retrying(command, optimistic=True)

    def rebuild_policy(self, policy_id: UUID | str, actor: str) -> Outcome:
        """Stops what runs (workers clean their partial objects), then starts afresh."""
        actor = _check_actor(actor)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            stopped = self._stop_running(policy, actor)
            policy.rebuild([s.id for s in stopped], actor)
            snap = self._new_snapshot(policy, "rebuild", actor)
            return self._commit(policy.id, policy, *stopped, snap, extra={"snapshot_id": snap.id})

        return self._retrying(command)

    def policy_archives(self, policy_id: UUID | str) -> list[Snapshot]:
        """Completed snapshots whose archives a policy delete would remove."""
        policy = self.get_policy(policy_id)
        return [s for s in self._live_snapshots(policy) if s.status in HAS_ARCHIVE]

    def record_policy_deleted(
        self, policy_id: UUID | str, keep_files: bool, actor: str, removed: set[UUID]
    ) -> Outcome:
        """Records a policy's deletion; `removed` names the snapshots whose archives the
        caller already deleted (service/deletion.py removes them, then calls this)."""
        actor = _check_actor(actor)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            snaps = self._live_snapshots(policy)
            if not keep_files:
                left = [s.sub_name for s in snaps if s.status in HAS_ARCHIVE and s.id not in removed]
                if left:
                    raise InvalidTransition(f"archives of {', '.join(left)} are still stored")
            policy.delete(keep_files, actor)
            for snap in snaps:
                snap.delete("policy deleted", snap.id in removed, actor)
            claim: PolicyNameClaim = self.repository.get(name_claim_id(policy.name))
            claim.release()
            return self._commit(policy.id, policy, *snaps, claim, extra={"archives_removed": len(removed)})

        return self._retrying(command)

    def schedule_snapshot(self, policy_id: UUID | str, slot: datetime) -> Outcome | None:
        """The scheduler's command: None when the slot is not due or another scheduler won."""
        try:
            policy = self.get_policy(policy_id)
            snapshot_id = scheduled_snapshot_id(policy.id, slot)
            policy.schedule_snapshot(snapshot_id, slot)
            snap = self._snapshot_for(policy, snapshot_id, "schedule", SCHEDULER_ACTOR)
            return Outcome(snap.id, self.record(policy, snap), {"policy_id": policy.id, "slot": slot})
        except (InvalidTransition, IntegrityError):
            return None

    # ------------------------------------------------------------ catalog resync
    def known_archive(self, snapshot_id: UUID, storage: str, archive_key: str) -> Snapshot | None:
        """The snapshot this store already has for an archive, found by its manifest's id."""
        try:
            snap: Aggregate = self.repository.get(snapshot_id)
        except AggregateNotFoundError:
            return None
        if isinstance(snap, Snapshot) and (snap.storage, snap.archive_key) == (storage, archive_key):
            return snap
        return None

    def import_snapshot(
        self, storage: str, archive_key: str, archive_bytes: int, found: ImportedArchive, actor: str
    ) -> Outcome:
        """Records an archive the store does not know: under the live policy of the same
        name, or under a new policy created stopped (nothing runs until an operator says
        so). The snapshot keeps its original id when that id is free, so a rebuilt catalog
        answers to the same ids; otherwise its id derives from the archive key, which makes
        concurrent or repeated syncs collide instead of importing twice."""
        actor = _check_actor(actor)

        def command() -> Outcome:
            known = self.known_archive(found.snapshot_id, storage, archive_key) if found.snapshot_id else None
            known = known or self.known_archive(
                imported_snapshot_id(storage, archive_key), storage, archive_key
            )
            if known is not None:
                return Outcome(known.id, self.recorder.max_notification_id() or 0, {"imported": False})
            changed: list[Aggregate] = []
            claim_id = name_claim_id(found.policy_name)
            claim: PolicyNameClaim | None
            try:
                claim = self.repository.get(claim_id)
            except AggregateNotFoundError:
                claim = None
            if claim is not None and claim.policy_id is not None:
                policy = self.get_policy(claim.policy_id)
            else:
                policy = BackupPolicy(
                    name=found.policy_name,
                    source=found.source,
                    storage=storage,
                    schedule=None,
                    timezone="UTC",
                    retention=Retention.parse(None).to_dict(),
                    collections=CollectionSelection.parse(None).to_dict(),
                    actor=actor,
                )
                policy.stop(actor)
                changed.append(self._claim_name(found.policy_name, policy.id))
            snapshot_id = found.snapshot_id
            if snapshot_id is None or self._exists(snapshot_id):
                snapshot_id = imported_snapshot_id(storage, archive_key)
            sequence = policy.import_snapshot(snapshot_id, actor)
            snap = Snapshot(
                id=snapshot_id,
                policy_id=policy.id,
                policy_name=policy.name,
                sequence=sequence,
                sub_name=f"{policy.name}#{sequence}",
                file_name=archive_key.rsplit("/", 1)[-1],
                archive_key=archive_key,
                source=found.source,
                storage=storage,
                collections=CollectionSelection.parse(None).to_dict(),
                expire_after_seconds=found.expire_after_seconds,
                trigger="import",
                actor=actor,
            )
            snap.import_archive(
                archive_bytes,
                found.manifest,
                found.manifest_sha256,
                found.started_at,
                found.finished_at,
                actor,
                found.verification,
            )
            position = self.record(policy, *changed, snap)
            return Outcome(snap.id, position, {"imported": True, "policy_id": policy.id})

        return self._retrying(command)

    def _exists(self, aggregate_id: UUID) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    # ---------------------------------------------------------------- run claims
    def claim_run(
        self, kind: str, task_id: UUID | str, worker: str, lease_seconds: int, now: datetime
    ) -> Snapshot | Restore | None:
        """Starts (or re-claims after a lapsed lease) a run together with its slot, in one
        append; None when the run is not claimable, its slot is busy, or another worker won."""
        task: Snapshot | Restore
        if kind == "snapshot":
            task = self.get_snapshot(task_id)
            key = f"policy:{task.policy_id}"
        else:
            task = self.get_restore(task_id)
            key = f"target:{task.target}"
        try:
            task.start(
                worker,
                f"ddt-{'backup' if kind == 'snapshot' else 'restore'}-{task.id.hex[:12]}",
                lease_seconds,
                now,
            )
        except InvalidTransition:
            return None
        slot: RunSlot
        try:
            slot = self.repository.get(slot_id(key))
        except AggregateNotFoundError:
            slot = RunSlot(key=key, holder=task.id, kind=kind)
        else:
            if slot.holder != task.id:
                holder_cls: type[Snapshot] | type[Restore] = Snapshot if slot.kind == "snapshot" else Restore
                holder = self._get(holder_cls, slot.holder, slot.kind)
                if holder.status == RUNNING and not holder.lease_expired(now):
                    return None
            slot.take(task.id, kind)
        try:
            self.record(task, slot)
        except IntegrityError:
            return None
        return task

    # ---------------------------------------------------------------- snapshots
    def stop_snapshot(self, snapshot_id: UUID | str, actor: str) -> Outcome:
        actor = _check_actor(actor)

        def command() -> Outcome:
            snap = self.get_snapshot(snapshot_id)
            snap.request_stop(actor)
            return self._commit(snap.id, snap)

        return self._retrying(command, optimistic=True)

    def delete_snapshot(
        self, snapshot_id: UUID | str, files_removed: bool, actor: str, reason: str = "user"
    ) -> Outcome:
        actor = _check_actor(actor)

        def command() -> Outcome:
            snap = self.get_snapshot(snapshot_id)
            snap.delete(reason, files_removed, actor)
            return self._commit(snap.id, snap)

        return self._retrying(command)

    # ----------------------------------------------------------------- restores
    def request_restore(
        self, snapshot_id: UUID | str, target: object, options: dict[str, Any], actor: str
    ) -> Outcome:
        """options: collections (list), mapping ({collection: new name}), existing, dry_run,
        keep_owners (PostgreSQL: owners and grants, instead of the target's setting),
        trust_unverified (restore a snapshot imported without a signature)."""
        actor = _check_actor(actor)
        target = _check_ref(target, self.catalog.targets, "target", "restore target")
        selection = CollectionSelection.parse(options.get("collections"))
        if selection.exclude:
            raise InvalidValue("a restore takes a list of collections", "collections")
        mapping = _check_mapping(options.get("mapping"))
        existing = options.get("existing")
        choices = self.catalog.existing_choices.get(target, ())
        if existing is not None and existing not in choices:
            allowed = ", ".join(choices) or "none for this target"
            raise InvalidValue(f"existing must be one of: {allowed}", "existing")
        dry_run = options.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidValue("dry_run must be true or false", "dry_run")
        keep_owners = options.get("keep_owners")
        if keep_owners is not None and not isinstance(keep_owners, bool):
            raise InvalidValue("keep_owners must be true or false", "keep_owners")
        trust = options.get("trust_unverified", False)
        if not isinstance(trust, bool):
            raise InvalidValue("trust_unverified must be true or false", "trust_unverified")
        try:
            snap = self.get_snapshot(snapshot_id)
        except NotFound as e:
            raise NotFound(e.message, "snapshot_id") from None
        if snap.status not in HAS_ARCHIVE:
            raise InvalidTransition(f"snapshot {snap.sub_name} is {snap.status}, not completed")
        if getattr(snap, "verification", None) == "unverified" and not trust:
            raise InvalidTransition(
                f"snapshot {snap.sub_name} was imported from storage {snap.storage!r} without a signature "
                "(unverified): nothing says this installation's writers made it, and a restore runs what it "
                "holds. Restore it with trust_unverified if you know where it comes from"
            )
        for field_name, names in (("collections", selection.include), ("mapping", list(mapping))):
            missing = [c for c in names if c not in snap.manifest_collections]
            if missing:  # a valid name, of nothing this snapshot holds
                raise NotFound(f"snapshot {snap.sub_name} has no collection {missing[0]!r}", field_name)
        chosen = selection.include or tuple(snap.manifest_collections)
        final = [mapping.get(c, c) for c in chosen]
        if len(set(final)) != len(final):
            raise InvalidValue("mapping sends two collections to one name", "mapping")
        restore = Restore(
            snapshot_id=snap.id,
            policy_id=snap.policy_id,
            sub_name=f"{snap.sub_name}->{target}" + (" (dry run)" if dry_run else ""),
            storage=snap.storage,
            archive_key=snap.archive_key,
            target=target,
            collections=list(selection.include),
            mapping=mapping,
            existing=existing,
            dry_run=dry_run,
            actor=actor,
            keep_owners=keep_owners,
            trust_unverified=trust,
        )
        return self._commit(restore.id, restore)

    def stop_restore(self, restore_id: UUID | str, actor: str) -> Outcome:
        actor = _check_actor(actor)

        def command() -> Outcome:
            restore = self.get_restore(restore_id)
            restore.request_stop(actor)
            return self._commit(restore.id, restore)

        return self._retrying(command)
