"""What a run is given and what it answers: the progress and stop callbacks, the results,
what the event store expects an archive to be, and the faults that fail one collection.

Runs know nothing about events: the worker passes a progress callback and a stop check.
"""

from __future__ import annotations

import builtins
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from domain.values import expand, name_matches
from transfer.archive.crypto import aead_context
from transfer.archive.format import (
    parse_manifest,
)
from transfer.errors import SourceError

Report = Callable[[int, int, float, "str | None"], None]


ShouldStop = Callable[[], bool]


VERSION = "0.1.0"


class CollectionFailed(Exception):
    """One collection could not be read; the others still make a (partial) snapshot."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


# What reading one collection can fail with while the others stay readable: a damaged or
# vanished file, a bad compressed stream, a source-side refusal. Storage errors and stops
# are not among them: they end the whole run.
COLLECTION_FAULTS = (SourceError, OSError, EOFError, zlib.error)


def failure_reason(e: BaseException) -> str:
    kind = type(e).__name__
    if kind == "error":  # zlib.error and friends name only their module
        kind = f"{type(e).__module__}.error"
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return f"{kind}: {text}" if text else kind


class ConsistencyError(Exception):
    """The target's item counts differ from the manifest after a restore."""


@dataclass
class BackupResult:
    items: int
    bytes: int
    sha256: str
    collections: dict[str, dict[str, Any]]
    manifest: builtins.bytes  # the field `bytes` above hides the type in this class's body
    failed: dict[str, str] = field(default_factory=dict)  # collections left out, with reasons
    version_id: str | None = None  # of the archive object, on a versioned S3 bucket
    manifest_version_id: str | None = None
    point_in_time: dict[str, Any] | None = None  # PointInTime.as_dict(): whether, and how, one moment

    @property
    def seal(self) -> dict[str, Any]:
        """What the completion event records, so that reading back believes nothing stored
        beside the archive: the manifest's SHA-256 and whether (and with which key) it is
        encrypted."""
        encryption = parse_manifest(self.manifest).get("encryption")
        return {
            "manifest_sha256": hashlib.sha256(self.manifest).hexdigest(),
            "encryption_key_id": encryption.get("key_id") if encryption else None,
            "aead_context": encryption.get("aad") if encryption else None,
            "version_id": self.version_id,  # read back pinned: an overwrite since is not read
            "manifest_version_id": self.manifest_version_id,
        }


class Sealed(Protocol):
    """What a snapshot's events say of its archive (domain/snapshot.py's Snapshot)."""

    @property
    def id(self) -> UUID: ...

    sha256: str | None
    seal: dict[str, Any] | None
    verification: str | None


@dataclass
class Expected:
    """What the event store says an archive is; None where an old snapshot did not say."""

    sha256: str | None = None  # of the stored object (ciphertext when encrypted)
    manifest_sha256: str | None = None
    encrypted: bool | None = None
    key_id: str | None = None
    context: bytes = b""  # binds an encrypted archive to its key and snapshot (AEAD data)
    trusted: bool = True  # False: imported without a signature (restored only when trusted)
    verify_first: bool = False  # read and authenticate the whole archive before writing
    version_id: str | None = None  # S3 versions recorded at completion: what is read
    manifest_version_id: str | None = None

    @classmethod
    def of(cls, snapshot: Sealed, archive_key: str) -> Expected:
        """From the snapshot's events. A snapshot this installation wrote is sealed at
        completion. An imported one keeps what its manifest said when it was imported, so
        a later change is refused; one imported unsigned or authenticated only by its
        encryption is read in full before anything is written."""
        seal = snapshot.seal or {}
        verification = snapshot.verification
        if not seal:
            return cls(sha256=snapshot.sha256 or None, trusted=verification != "unverified")
        encrypted = seal.get("encryption_key_id") is not None
        written_as = seal.get("snapshot_id") or str(snapshot.id)
        context = aead_context(archive_key, written_as) if seal.get("aead_context") else b""
        return cls(
            sha256=snapshot.sha256 or None,
            manifest_sha256=seal.get("manifest_sha256"),
            encrypted=encrypted,
            key_id=seal.get("encryption_key_id"),
            context=context,
            trusted=verification != "unverified",
            verify_first=verification in ("encrypted", "unverified"),
            version_id=seal.get("version_id"),
            manifest_version_id=seal.get("manifest_version_id"),
        )


@dataclass
class RestoreResult:
    items: int
    bytes: int
    collections: dict[str, dict[str, Any]]
    schema: dict[str, Any] | None = None  # what a schema-carrying target says: skipped objects, roles


def select_collections(
    available: dict[str, Any], include: list[str], exclude: list[str], source: str
) -> list[str]:
    """Names, or `*` patterns (domain/values.py), in include and exclude; an include entry
    that selects nothing is an error, as a typo would be."""
    chosen, missing = expand(include, available) if include else (list(available), [])
    if missing:
        entry = missing[0]
        if "*" in entry:
            raise SourceError(f"source {source!r} has no collection matching {entry!r}")
        raise SourceError(f"source {source!r} has no collection {entry!r}")
    names = [c for c in chosen if not any(name_matches(p, c) for p in exclude)]
    if not names:
        raise SourceError(f"no collection of source {source!r} is selected")
    return names
