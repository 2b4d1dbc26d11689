"""Catalog resync: rebuilds Backup Records from what a storage location holds.

The bucket outlives the control plane. Every complete archive has a sidecar manifest (its
commit marker), and the manifest names the snapshot, its policy and its source, so a fresh
installation can record each archive it does not know as an imported snapshot. An archive
without a manifest never completed: it is reported, never imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.application import Snapledger
from domain.errors import DomainError, InvalidValue
from domain.import_commands import ImportedArchive, imported_snapshot_id
from domain.values import check_name
from service.capture import SEGMENT_FORMAT
from transfer.archive.crypto import Keyring, Signer
from transfer.archive.format import ArchiveError, parse_manifest
from transfer.segments import position_order
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
    segments = {seg: k for k in sizes if (seg := layout.segment_of_manifest(k)) is not None}
    report.incomplete = sorted(
        k for k in sizes if not layout.is_sidecar(k) and k not in committed and k not in segments
    )
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
    _sync_windows(app, storage, sizes, segments, report, actor, dry_run, signer)
    return report


SEGMENT_FACTS = {
    "from_lsn": str, "to_lsn": str, "first_commit": str, "last_commit": str, "transactions": int,
    "items": int, "bytes": int, "sha256": str, "key": str,
}  # fmt: skip


def _segment_found(storage: Storage, key: str, signer: Signer | None) -> dict[str, Any]:
    """A segment manifest from storage, checked as untrusted input (it becomes events):
    signed where the location signs, its facts typed, its segment present."""
    data = storage.get_bytes(layout.segment_manifest_key(key))
    if signer is not None:
        sig = layout.segment_signature_key(key)
        signer.check(data, storage.get_bytes(sig) if storage.exists(sig) else None, f"manifest of {key!r}")
    try:
        found = json.loads(data)
    except ValueError:
        raise ArchiveError("segment manifest is not JSON") from None
    if not isinstance(found, dict) or found.get("format") != SEGMENT_FORMAT:
        raise ArchiveError(f"segment manifest is not {SEGMENT_FORMAT}")
    segment, window = found.get("segment"), found.get("window")
    if not isinstance(segment, dict) or not isinstance(window, dict):
        raise ArchiveError("segment manifest has no segment or no window")
    for name, kind in SEGMENT_FACTS.items():
        if not isinstance(segment.get(name), kind):
            raise ArchiveError(f"segment manifest's {name} is missing or not {kind.__name__}")
    if segment["key"] != key:
        raise ArchiveError(f"segment manifest names {segment['key']!r}, not its own segment")
    try:
        for name in ("from_lsn", "to_lsn"):
            position_order(segment[name])
        position_order(str(window.get("from_position")))
        UUID(str(found.get("snapshot_id")))
    except ValueError as e:
        raise ArchiveError(f"segment manifest: {e}") from None
    return found


def _chain(manifests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """The segments that follow one another from the window's start, and the others with
    why. A step killed after storing its segment but before recording it leaves one that
    starts where the recorded one does and ends sooner (its prefix): where two start at one
    position, the one the chain goes on from is taken, else the longer."""
    window = manifests[0]["window"]
    by_start: dict[str, list[dict[str, Any]]] = {}
    for item in manifests:
        by_start.setdefault(item["segment"]["from_lsn"], []).append(item)
    chain: list[dict[str, Any]] = []
    taken: set[str] = set()
    position = str(window["from_position"])
    while candidates := [i for i in by_start.get(position, []) if i["window"] == window]:
        best = max(
            candidates,
            key=lambda i: (i["segment"]["to_lsn"] in by_start, position_order(i["segment"]["to_lsn"])),
        )
        chain.append(best["segment"])
        taken.add(best["segment"]["key"])
        if position_order(best["segment"]["to_lsn"]) <= position_order(position):
            break  # a segment that does not move on: nothing after it is believed
        position = best["segment"]["to_lsn"]
    left = [
        (item["segment"], f"not on its window's chain of segments (which reaches {position})")
        for item in manifests
        if item["segment"]["key"] not in taken
    ]
    return chain, left


def _sync_windows(
    app: Snapledger,
    storage: Storage,
    sizes: dict[str, int],
    segments: dict[str, str],
    report: SyncReport,
    actor: str,
    dry_run: bool,
    signer: Signer | None,
) -> None:
    """Capture windows found in storage: each snapshot's segments, contiguous from its
    window's start, recorded under that snapshot when its capture is not (a rebuilt control
    plane restores to a moment from the bucket alone). A gap ends what is imported there;
    the segments after it are reported."""
    from domain.capture import capture_id

    by_snapshot: dict[str, list[dict[str, Any]]] = {}
    for key, mkey in sorted(segments.items()):
        if key not in sizes:
            report.invalid.append({"key": mkey, "reason": "segment manifest without its segment"})
            continue
        try:
            found = _segment_found(storage, key, signer)
        except (ArchiveError, StorageError) as e:
            report.invalid.append({"key": mkey, "reason": str(e)})
            continue
        by_snapshot.setdefault(str(found["snapshot_id"]), []).append(found)
    for snapshot_id, manifests in sorted(by_snapshot.items()):
        chain, left = _chain(manifests)
        window = manifests[0]["window"]
        for facts, why in left:
            report.invalid.append({"key": facts["key"], "reason": why})
        try:
            snap = app.get_snapshot(snapshot_id)
        except DomainError:
            why = f"its snapshot {snapshot_id} is not recorded"
            report.invalid.extend({"key": facts["key"], "reason": why} for facts in chain)
            continue
        if not chain or app.has_capture(capture_id(snap.policy_id, snap.id)):
            report.known += len(chain)
            continue
        entry: dict[str, Any] = {"window_of": snapshot_id, "segments": len(chain)}
        entry["until"] = chain[-1]["to_lsn"]
        if not dry_run:
            try:
                outcome = app.import_capture(snap.id, storage.name, window, chain, actor)
            except DomainError as e:
                report.invalid.append({"key": chain[0]["key"], "reason": str(e)})
                continue
            entry.update(capture_id=str(outcome.id), position=outcome.position)
            log.info("sync: imported %d segments after %s from %s", len(chain), snapshot_id, storage.name)
        report.imported.append(entry)
