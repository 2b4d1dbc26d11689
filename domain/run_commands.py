"""Commands on runs: a worker's claim, stopping or deleting a snapshot, and restores."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.drill import Drill
from domain.errors import InvalidTransition, InvalidValue, NotFound
from domain.ledger import (
    Ledger,
    Outcome,
    check_actor,
    check_mapping,
    check_ref,
)
from domain.restore import Restore
from domain.slots import RunSlot, slot_id
from domain.snapshot import HAS_ARCHIVE, RUNNING, Snapshot
from domain.values import CollectionSelection, expand

TASK_WORDS = {"snapshot": "backup", "restore": "restore", "drill": "drill"}  # in the DDT Task Name
RUN_CLASSES: dict[str, type[Snapshot] | type[Restore] | type[Drill]] = {
    "snapshot": Snapshot, "restore": Restore, "drill": Drill,
}  # fmt: skip


class RunCommands(Ledger):
    def claim_run(
        self, kind: str, task_id: UUID | str, worker: str, lease_seconds: int, now: datetime
    ) -> Snapshot | Restore | Drill | None:
        """Starts (or re-claims after a lapsed lease) a run together with its slot, in one
        append; None when the run is not claimable, its slot is busy, or another worker won.
        A drill takes its target's slot, as a restore does."""
        task: Snapshot | Restore | Drill
        if kind == "snapshot":
            task = self.get_snapshot(task_id)
            key = f"policy:{task.policy_id}"
        elif kind == "drill":
            task = self._get(Drill, task_id, "drill")
            key = f"target:{task.target}"
        else:
            task = self.get_restore(task_id)
            key = f"target:{task.target}"
        try:
            task.start(
                worker,
                f"ddt-{TASK_WORDS[kind]}-{task.id.hex[:12]}",
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
                holder_cls = RUN_CLASSES[slot.kind]
                holder = self._get(holder_cls, slot.holder, slot.kind)
                if holder.status == RUNNING and not holder.lease_expired(now):
                    return None
            slot.take(task.id, kind)
        try:
            self.record(task, slot)
        except IntegrityError:
            return None
        return task

    def stop_snapshot(self, snapshot_id: UUID | str, actor: str) -> Outcome:
        actor = check_actor(actor)

        def command() -> Outcome:
            snap = self.get_snapshot(snapshot_id)
            snap.request_stop(actor)
            return self._commit(snap.id, snap)

        return self._retrying(command, optimistic=True)

    def delete_snapshot(
        self, snapshot_id: UUID | str, files_removed: bool, actor: str, reason: str = "user"
    ) -> Outcome:
        actor = check_actor(actor)

        def command() -> Outcome:
            snap = self.get_snapshot(snapshot_id)
            snap.delete(reason, files_removed, actor)
            return self._commit(snap.id, snap)

        return self._retrying(command)

    def request_restore(
        self,
        snapshot_id: UUID | str,
        target: object,
        options: dict[str, Any],
        actor: str,
        point_in_time: dict[str, Any] | None = None,
    ) -> Outcome:
        """options: collections (list), mapping ({collection: new name}), existing, dry_run,
        keep_owners (PostgreSQL: owners and grants, instead of the target's setting),
        trust_unverified (restore a snapshot imported without a signature), validate
        (MongoDB: apply the target's validators, counting the documents they refuse)."""
        actor = check_actor(actor)
        target = check_ref(target, self.catalog.targets, "target", "restore target")
        selection = CollectionSelection.parse(options.get("collections"))
        if selection.exclude:
            raise InvalidValue("a restore takes a list of collections", "collections")
        mapping = check_mapping(options.get("mapping"))
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
        validate = options.get("validate", False)
        if not isinstance(validate, bool):
            raise InvalidValue("validate must be true or false", "validate")
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
        missing = [c for c in mapping if c not in snap.manifest_collections]  # renames take names
        if missing:  # a valid name, of nothing this snapshot holds
            raise NotFound(f"snapshot {snap.sub_name} has no collection {missing[0]!r}", "mapping")
        # Names or `*` patterns: recorded as the names they select, so every attempt of the
        # restore moves the same collections.
        chosen, unmatched = expand(selection.include, snap.manifest_collections)
        if unmatched:
            entry = unmatched[0]
            what = f"matching {entry!r}" if "*" in entry else repr(entry)
            raise NotFound(f"snapshot {snap.sub_name} has no collection {what}", "collections")
        if not selection.include:
            chosen = list(snap.manifest_collections)
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
            collections=chosen if selection.include else [],
            mapping=mapping,
            existing=existing,
            dry_run=dry_run,
            actor=actor,
            keep_owners=keep_owners,
            validate=validate,
            trust_unverified=trust,
            point_in_time=point_in_time,
        )
        return self._commit(restore.id, restore)

    def stop_restore(self, restore_id: UUID | str, actor: str) -> Outcome:
        actor = check_actor(actor)

        def command() -> Outcome:
            restore = self.get_restore(restore_id)
            restore.request_stop(actor)
            return self._commit(restore.id, restore)

        return self._retrying(command)
