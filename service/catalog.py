"""Catalog resync of one storage location: import the archives the event store does not
know (after a lost database, or from another installation)."""

from __future__ import annotations

from collections.abc import Callable

from domain.application import Snapledger
from projections import queries
from projections.db import ViewDatabase
from service.sync import SyncReport, sync_storage
from transfer.archive.crypto import Keyring, Signer
from transfer.storage import Storage


def sync_location(
    app: Snapledger, views: ViewDatabase, storage: Storage, actor: str, wait: Callable[[int], bool],
    dry_run: bool = False, signer: Signer | None = None, keyring: Keyring | None = None,
) -> SyncReport:  # fmt: skip
    """The views show what was imported before this answers."""
    recorded = queries.archives_written_to(views, storage.name)
    report = sync_storage(app, storage, actor, dry_run, recorded, signer=signer, keyring=keyring)
    positions = [e["position"] for e in report.imported if "position" in e]
    if positions:
        wait(max(positions))
    return report
