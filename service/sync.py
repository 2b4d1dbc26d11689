"""Catalog resync: rebuilds Backup Records from what a storage location holds.

The bucket outlives the control plane. Every complete archive has a sidecar manifest (its
commit marker), and the manifest names the snapshot, its policy and its source, so a fresh
installation can record each archive it does not know as an imported snapshot. An archive
without a manifest never completed: it is reported, never imported.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.application import Snapledger
from domain.errors import DomainError, InvalidValue
from domain.import_commands import ImportedArchive, imported_snapshot_id
from domain.values import check_name
from transfer.archive.crypto import Keyring, Signer
from transfer.archive.format import ArchiveError, parse_manifest
from transfer.storage import Storage, StorageError, layout
from transfer.storage.layout import signature_key

log = logging.getLogger("snapledger.sync")
SYNC_ACTOR = "system:sync"


@dataclass
class SyncReport:
    storage: str
    dry_run: bool = False
    imported: list[dict[str, Any]] = field(default_factory=list)
    known: int = 0
    changed: list[dict[str, str]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "dry_run": self.dry_run,
            "imported": self.imported,
            "known": self.known,
            "changed": self.changed,
            "incomplete": self.incomplete,
            "invalid": self.invalid,
        }


def _time(manifest: dict[str, Any], key: str) -> datetime | None:
    value = manifest.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ArchiveError(f"manifest {key} {value!r} is not an ISO time") from None
    if parsed.tzinfo is None:
        raise ArchiveError(f"manifest {key} {value!r} has no time zone")
    return parsed


def read_found(manifest: dict[str, Any], data: bytes, archive_key: str) -> ImportedArchive:
    """Checks a manifest from storage as untrusted input: it becomes events forever."""
    collections = manifest.get("collections")
    if not isinstance(collections, dict) or not collections:
        raise ArchiveError("manifest lists no collections")
    for name, entry in collections.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("items"), int):
            raise ArchiveError(f"manifest entry of collection {name!r} has no item count")
    finished = _time(manifest, "finished_at")
    if finished is None:
        raise ArchiveError("manifest has no finished_at")
    raw_name = manifest.get("policy") or archive_key.split("/", 1)[0]
    try:
        policy_name = check_name(raw_name)
    except InvalidValue:
        policy_name = "imported-" + hashlib.sha256(str(raw_name).encode()).hexdigest()[:12]
    try:
        snapshot_id: UUID | None = UUID(str(manifest["snapshot_id"]))
    except (KeyError, ValueError):
        snapshot_id = None
    expire = manifest.get("expire_after_seconds")
    return ImportedArchive(
        manifest=manifest,
        manifest_sha256=hashlib.sha256(data).hexdigest(),
        policy_name=policy_name,
        source=str(manifest.get("source") or "unknown"),
        snapshot_id=snapshot_id,
        started_at=_time(manifest, "started_at"),
        finished_at=finished,
        expire_after_seconds=expire if isinstance(expire, int) and expire > 0 else None,
    )


def verification_of(
    storage: Storage,
    archive_key: str,
    manifest: dict[str, Any],
    data: bytes,
    signer: Signer | None,
    keyring: Keyring | None,
) -> str:
    """signed: the location signs, and this manifest's HMAC matches (a missing or wrong one
    raises: the archive is not imported). encrypted: the location's key decrypts it, which
    authenticates it when restored. unverified: nothing says who wrote it."""
    if signer is not None:
        key = signature_key(archive_key)
        signature = storage.get_bytes(key) if storage.exists(key) else None
        signer.check(data, signature, f"manifest of {archive_key!r}")
        return "signed"
    encryption = manifest.get("encryption") or {}
    if (
        encryption
        and keyring is not None
        and encryption.get("key_id") in keyring.keys
        and encryption.get("aad")
    ):
        return "encrypted"
    return "unverified"


def sync_storage(
    app: Snapledger,
    storage: Storage,
    actor: str = SYNC_ACTOR,
    dry_run: bool = False,
    recorded: frozenset[str] = frozenset(),
    signer: Signer | None = None,
    keyring: Keyring | None = None,
) -> SyncReport:
    """Idempotent: an archive is known by its snapshot id and key, so a second run imports
    nothing; a known imported archive whose manifest changed since is reported as changed.

    `recorded`: archive keys this installation wrote itself (from the views). Their
    manifests are not fetched, so a periodic sync of a large bucket costs one listing,
    not one GET per archive."""
    report = SyncReport(storage.name, dry_run=dry_run)
    sizes = {o.key: o.size for o in storage.list_objects() if not layout.is_probe(o.key)}
    committed = {a: k for k in sizes if (a := layout.archive_of_manifest(k)) is not None}
    report.incomplete = sorted(k for k in sizes if not layout.is_sidecar(k) and k not in committed)
    for archive_key, mkey in sorted(committed.items(), key=lambda item: item[1]):
        if archive_key not in sizes:
            report.invalid.append({"key": mkey, "reason": "manifest without its archive"})
            continue
        if archive_key in recorded:
            report.known += 1
            continue
        try:
            data = storage.get_bytes(mkey)
            manifest = parse_manifest(data)
            found = replace(
                read_found(manifest, data, archive_key),
                verification=verification_of(storage, archive_key, manifest, data, signer, keyring),
            )
        except (ArchiveError, StorageError) as e:
            report.invalid.append({"key": mkey, "reason": str(e)})
            continue
        known = None
        for candidate in (found.snapshot_id, imported_snapshot_id(storage.name, archive_key)):
            if candidate is not None and known is None:
                known = app.known_archive(candidate, storage.name, archive_key)
        if known is not None:
            report.known += 1
            known_sha = getattr(known, "manifest_sha256", None)  # not `recorded`: that is the key set
            if known_sha is not None and known_sha != found.manifest_sha256:
                report.changed.append({"key": archive_key, "snapshot_id": str(known.id)})
            continue
        entry: dict[str, Any] = {
            "archive_key": archive_key,
            "policy": found.policy_name,
            "verification": found.verification,
        }
        if not dry_run:
            try:
                outcome = app.import_snapshot(storage.name, archive_key, sizes[archive_key], found, actor)
            except DomainError as e:
                report.invalid.append({"key": mkey, "reason": str(e)})
                continue
            if not outcome.extra.get("imported"):
                report.known += 1
                continue
            entry.update(snapshot_id=str(outcome.id), position=outcome.position)
            log.info("sync: imported %s from %s", archive_key, storage.name)
        report.imported.append(entry)
    return report
