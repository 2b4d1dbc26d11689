"""Verify: read a whole archive through every check a restore makes, writing nothing."""

from __future__ import annotations

from transfer.archive.crypto import Keyring
from transfer.runs.contract import Expected, Report, RestoreResult, ShouldStop
from transfer.runs.reading import Discard, check_counts, load_manifest, open_archive, read_through
from transfer.storage import Storage


def verify_archive(
    storage: Storage,
    archive_key: str,
    report: Report | None = None,
    should_stop: ShouldStop | None = None,
    keyring: Keyring | None = None,
    expected: Expected | None = None,
) -> RestoreResult:
    """Re-reads the whole archive: every member's SHA-256 and item count, and the manifest
    (an encrypted archive is also authenticated, segment by segment); with `expected`,
    the manifest and the whole stored object against what the snapshot's events recorded."""
    manifest = load_manifest(storage, archive_key, expected)
    wanted = set(manifest["collections"])
    with open_archive(storage, archive_key, manifest, keyring, expected) as stream:
        items, read, counts = read_through(
            stream,
            manifest,
            wanted,
            Discard(manifest.get("source_kind", "ndjson")),
            report or (lambda *a: None),
            should_stop or (lambda: False),
        )
    return RestoreResult(items, read, check_counts(manifest["collections"], counts, sorted(wanted)))
