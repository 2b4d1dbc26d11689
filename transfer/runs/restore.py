"""A restore run: storage -> archive -> target, with the target's item counts checked
against the manifest afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transfer.archive.crypto import Keyring
from transfer.archive.format import (
    ArchiveError,
)
from transfer.errors import AlreadyRestored
from transfer.ports import Target
from transfer.runs.contract import Expected, Report, RestoreResult, ShouldStop
from transfer.runs.reading import Discard, Mapped, check_counts, load_manifest, open_archive, read_through
from transfer.runs.verify import verify_archive
from transfer.storage import Storage


def run_restore(
    storage: Storage,
    archive_key: str,
    target: Target,
    collections: list[str],
    report: Report,
    should_stop: ShouldStop,
    mapping: dict[str, str] | None = None,
    existing: str | None = None,
    dry_run: bool = False,
    keyring: Keyring | None = None,
    keep_owners: bool | None = None,
    validate: bool = False,
    on_plan: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    run_id: str = "",
    expected: Expected | None = None,
    before_commit: Callable[[], None] = lambda: None,
) -> RestoreResult:
    """A dry run verifies the archive and reports what would be written, touching nothing.

    Targets that cannot make a restore all-or-nothing (`transactional = False`) get the
    archive verified in full before the first write. An encrypted archive's key is
    checked before the target is opened.
    """
    manifest = load_manifest(storage, archive_key, expected)
    available = manifest["collections"]
    wanted = set(collections or available)
    missing = sorted(wanted - set(available))
    if missing:
        raise ArchiveError(f"archive has no collection {missing[0]!r}")
    mapping = mapping or {}
    names = sorted(wanted)
    kind = manifest.get("source_kind", "ndjson")
    if dry_run:
        with open_archive(storage, archive_key, manifest, keyring, expected) as stream:
            items, read, counts = read_through(stream, manifest, wanted, Discard(kind), report, should_stop)
        check = check_counts(available, counts, names)
        for name in names:
            check[name].update(target_name=mapping.get(name, name), would_write=counts.get(name, 0))
        return RestoreResult(items, read, check)
    legacy = expected is not None and expected.manifest_sha256 is None and bool(expected.sha256)
    first = expected is not None and expected.verify_first
    if not target.transactional or legacy or first:
        # A target that cannot undo, or a snapshot from before the seal (only the object's
        # SHA-256 was recorded, known at the end): the whole archive is checked first.
        verify_archive(storage, archive_key, should_stop=should_stop, keyring=keyring, expected=expected)
    # Every target gets every option (transfer/ports.py): each kind takes what applies to
    # it, and refuses a snapshot of another kind before it reads any of them.
    extras: dict[str, Any] = dict(
        format_version=manifest.get("format_version", 1),
        keep_owners=keep_owners,
        should_stop=should_stop,
        on_plan=on_plan,
        resume=resume,
        run_id=run_id,
        sizes={c: int(v.get("raw_bytes", 0)) for c, v in available.items()},
        validate=validate,
    )
    try:
        with (
            open_archive(storage, archive_key, manifest, keyring, expected) as stream,
            target.open(kind, existing, **extras) as session,
        ):
            selection = sorted(wanted) if collections else None
            items, read, _ = read_through(
                stream, manifest, wanted, Mapped(session, mapping, selection), report, should_stop
            )
            # The consistency check reads the target itself, before anything becomes visible.
            check = check_counts(available, {n: session.count_items(n) for n in names}, names)
            for name in names:
                if name in mapping:
                    check[name]["target_name"] = mapping[name]
            before_commit()  # a fenced attempt raises here: it must not publish (or append) twice
            session.commit()
            notes = session.schema_notes()
    except AlreadyRestored as done:  # checked and committed by the attempt that died
        check = check_counts(available, {n: available[n]["items"] for n in names}, names)
        for name in names:
            if name in mapping:
                check[name]["target_name"] = mapping[name]
        return RestoreResult(
            sum(available[n]["items"] for n in names),
            sum(available[n]["bytes"] for n in names),
            check,
            done.notes,
        )
    return RestoreResult(items, read, check, notes)
