"""Catalog resync's commands: recording archives found in storage as imported snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from domain.ledger import (
    Ledger,
    Outcome,
    check_actor,
)
from domain.policy import BackupPolicy, PolicyNameClaim, name_claim_id
from domain.snapshot import Snapshot
from domain.values import CollectionSelection, Retention


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


class ImportCommands(Ledger):
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
        actor = check_actor(actor)

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
