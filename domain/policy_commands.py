"""Commands on backup policies: create, Edit, Stop, Rebuild, Delete, and Take a Snapshot
(by hand or on schedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.errors import Conflict, InvalidTransition, InvalidValue
from domain.ledger import (
    Ledger,
    Outcome,
    check_actor,
    check_ref,
    utc_now,
)
from domain.policy import EDITABLE_FIELDS, SCHEDULER_ACTOR, BackupPolicy, PolicyNameClaim, name_claim_id
from domain.schedule import scheduled_snapshot_id
from domain.snapshot import DELETED, HAS_ARCHIVE, REQUESTED, RUNNING, Snapshot
from domain.values import (
    CollectionSelection,
    Continuous,
    Retention,
    check_cron,
    check_name,
    check_timezone,
    parse_drill,
)

CAPTURED_KINDS = ("postgresql", "mongodb")


class PolicyCommands(Ledger):
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
                    out[key] = check_ref(data.get(key), self.catalog.sources, "source", "source")
                else:
                    out[key] = check_ref(data.get(key), self.catalog.storages, "storage", "storage location")
        if "schedule" in data or not partial:
            out["schedule"] = check_cron(data.get("schedule"))
        if "timezone" in data or not partial:
            out["timezone"] = check_timezone(data.get("timezone"))
        if "retention" in data or not partial:
            out["retention"] = Retention.parse(data.get("retention")).to_dict()
        if "collections" in data or not partial:
            out["collections"] = CollectionSelection.parse(data.get("collections")).to_dict()
        if "continuous" in data or not partial:
            continuous = Continuous.parse(data.get("continuous"))
            out["continuous"] = continuous.to_dict() if continuous else None
        if "drill" in data or not partial:
            drill = parse_drill(data.get("drill"))
            if drill is not None:
                check_ref(drill["target"], self.catalog.targets, "drill.target", "drill target")
                kind = self.catalog.target_kinds.get(drill["target"])
                if drill["checks"] and kind is not None and kind != "postgresql":
                    raise Conflict(
                        f"drill checks are SQL and run on a PostgreSQL drill target; "
                        f"{drill['target']!r} is {kind}",
                        "drill.checks",
                    )
            out["drill"] = drill
        return out

    def _check_capture(self, source: str, continuous: dict[str, Any] | None) -> None:
        """Continuous capture reads a PostgreSQL source's WAL by logical decoding, or a
        MongoDB replica set's oplog."""
        kind = self.catalog.source_kinds.get(source)
        if continuous is not None and kind is not None and kind not in CAPTURED_KINDS:
            raise Conflict(  # the request is well formed; the configured source cannot do it
                f"continuous capture needs a PostgreSQL or MongoDB source; {source!r} is {kind}",
                "continuous",
            )

    def create_policy(self, data: dict[str, Any], actor: str) -> Outcome:
        actor = check_actor(actor)
        fields = self._policy_fields(data, partial=False)
        self._check_capture(fields["source"], fields["continuous"])

        def command() -> Outcome:
            policy = BackupPolicy(**fields, actor=actor)
            claim = self._claim_name(fields["name"], policy.id)
            return self._commit(policy.id, policy, claim)

        return self._retrying(command)

    def edit_policy(self, policy_id: UUID | str, data: dict[str, Any], actor: str) -> Outcome:
        actor = check_actor(actor)
        if not data:
            raise InvalidValue("nothing to change: give at least one policy field", None)
        fields = self._policy_fields(data, partial=True)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            self._check_capture(
                fields.get("source", policy.source), fields.get("continuous", policy.continuous)
            )
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
        actor = check_actor(actor)

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
        now = utc_now()
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
        actor = check_actor(actor)

        def command() -> Outcome:
            policy = self.get_policy(policy_id)
            snap = self._new_snapshot(policy, trigger, actor)
            return self._commit(snap.id, policy, snap, extra={"policy_id": policy.id})

        return self._retrying(command, optimistic=True)

    def rebuild_policy(self, policy_id: UUID | str, actor: str) -> Outcome:
        """Stops what runs (workers clean their partial objects), then starts afresh."""
        actor = check_actor(actor)

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
        actor = check_actor(actor)

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
