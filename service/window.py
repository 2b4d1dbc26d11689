"""A continuous policy's snapshot opens a capture window: the backup reads in the exported
snapshot of a replication slot made for it, and the slot stays, for the capture to stream
from the snapshot's exact consistent point (service/capture_loop.py takes it from there).

A snapshot that fails or stops drops its slot; so does the next attempt of one whose worker
died (the slot's name is the snapshot's, so it is found), before it makes a new one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg

from transfer.errors import SourceError
from transfer.sources.postgres import capture
from transfer.sources.postgres.connection import conninfo
from transfer.storage.base import StorageError
from transfer.storage.layout import segment_manifest_key, segment_signature_key

log = logging.getLogger("snapledger.capture")
SLOT_PATTERN = re.compile(r"snapledger_([0-9a-f]{32})")


def slot_name(snapshot_id: UUID) -> str:
    return f"snapledger_{snapshot_id.hex}"


def drop(source: Any, name: str) -> bool:
    with psycopg.connect(conninfo(source.url, source.password), autocommit=True, connect_timeout=10) as conn:
        return capture.drop_slot(conn, name)


@contextmanager
def opened(source: Any, snapshot_id: UUID) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(the source to read, read in the slot's snapshot; the window's facts for the
    snapshot's point_in_time). The slot is kept when the body returns, dropped if it raises."""
    name = slot_name(snapshot_id)
    drop(source, name)  # a dead attempt's, if any: its snapshot is gone with its transaction
    try:
        with capture.create_slot(source.url, source.password, name) as slot:
            # The server's clock once the slot is consistent: every transaction in the
            # snapshot committed before it, every one after the slot's point at or after it.
            with psycopg.connect(conninfo(source.url, source.password), autocommit=True) as conn:
                row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            facts = {"slot": slot.name, "from_position": slot.consistent_lsn, "from_time": row[0].isoformat()}
            yield source.joined(slot.snapshot), facts
    except BaseException:
        drop(source, name)
        raise


def oplog_window(point_in_time: dict[str, Any], source: Any) -> dict[str, Any]:
    """A MongoDB snapshot's window: from its cluster time, the last oplog entry it holds.
    There is no slot; a snapshot that is not one point in time (a standalone server keeps no
    oplog) cannot open a window, and says why."""
    if not point_in_time.get("cluster_time"):
        raise SourceError(
            f"source {source.name!r} keeps no oplog ({point_in_time.get('how', 'not a replica set')}): "
            "continuous capture needs a replica set member"
        )
    return {
        "kind": "mongodb",
        "slot": "",
        "from_position": point_in_time["cluster_time"],
        "from_time": point_in_time.get("at"),
        "databases": list(source.databases),
    }


def remove_segments(app: Any, storage: Any, snapshot: Any) -> int:
    """A snapshot's window goes with it: its capture stops and its segments are removed, as
    they restore nothing without the snapshot they follow. Answers how many were removed."""
    from domain.capture import CAPTURING, capture_id
    from domain.errors import NotFound

    try:
        found = app.get_capture(capture_id(snapshot.policy_id, snapshot.id))
    except NotFound:
        return 0
    if found.status == CAPTURING:
        found.stop(f"its snapshot {snapshot.sub_name} is deleted")
        app.record(found)
    removed = 0
    for segment in found.segments:
        key = segment["key"]
        try:  # the manifest first: a segment without one is no longer committed
            for name in (segment_manifest_key(key), segment_signature_key(key), key):
                if name == key or storage.exists(name):
                    storage.delete(name)
            removed += 1
        except StorageError as e:  # under object lock: it stays until the lock lapses
            log.warning("segment %s kept: %s", key, e)
    return removed
