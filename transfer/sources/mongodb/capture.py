"""Continuous capture from a MongoDB replica set by tailing its oplog, from a snapshot's
cluster time on.

The snapshot's cluster time (oplog.py) is the ts of the last oplog entry it holds; the capture
reads the entries after it, so snapshot and stream meet with no gap and no overlap. An oplog
ts is the resume point: it is recorded with each segment and the next read starts after it,
as mongodump's --oplog and Percona's oplog slices do. Change streams would give resume tokens
too, but their events are not the oplog's: the oplog's own entries are what the restore of a
snapshot already replays (oplog.Replayer), and a segment is then a gzip of mongodump's
oplog.bson.

The oplog is capped: no slot keeps it for us. A read therefore starts by finding the entry
at its resume point; if it is gone the oplog rolled over and changes are lost, which ends
the window loudly rather than restoring a hole.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson import Timestamp
from bson.codec_options import CodecOptions
from pymongo.read_concern import ReadConcern

from transfer.errors import SourceError
from transfer.segments import Segment
from transfer.sources.mongodb.connection import split_name
from transfer.sources.mongodb.oplog import KNOWN_COMMANDS, cluster_time, replayable, wall_time

SYSTEM_DATABASES = ("admin", "local", "config")
UTC_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)
MAJORITY = ReadConcern("majority")  # an entry a failover could roll back is not archived yet


def _oplog(client: Any) -> Any:
    return client.local.get_collection("oplog.rs", codec_options=UTC_CODEC, read_concern=MAJORITY)


def parse_position(value: str) -> Timestamp:
    """`1796142873.11` (as cluster_time writes it) back to the oplog's Timestamp."""
    seconds, dot, increment = value.partition(".")
    if not dot or not seconds.isdigit() or not increment.isdigit():
        raise SourceError(f"{value!r} is not an oplog position (<seconds>.<increment>)")
    return Timestamp(int(seconds), int(increment))


def position_value(value: str) -> int:
    ts = parse_position(value)
    return (ts.time << 32) | ts.inc


@dataclass
class OplogTransaction:
    """One source transaction: a single write, or every entry of a multi-document one.
    `commit_lsn` is its last entry's position, named as PostgreSQL's commits are so one
    plan (transfer/runs/point_in_time.py) serves both."""

    commit_lsn: str
    commit_time: str  # the entry's wall clock, ISO 8601 UTC
    xid: int | None  # the transaction number, for a multi-document transaction
    changes: list[dict[str, Any]] = field(default_factory=list)  # oplog entries, in order
    _bson: bytes | None = field(default=None, repr=False, compare=False)

    def bson(self) -> bytes:
        """Its entries as the segment stores them, encoded once: the step sizes a segment
        by them and then writes them."""
        if self._bson is None:
            self._bson = b"".join(bson.encode(entry) for entry in self.changes)
        return self._bson


def _txn_key(entry: dict[str, Any]) -> tuple[bytes, int] | None:
    lsid, number = entry.get("lsid"), entry.get("txnNumber")
    if not isinstance(lsid, dict) or number is None:
        return None
    return bson.encode(lsid), int(number)


def transactions(entries: list[dict[str, Any]], complete: bool) -> list[OplogTransaction]:
    """Entries grouped into whole transactions, in oplog order. A multi-document
    transaction is one applyOps entry, or a chain of them marked `partialTxn` ending in
    the one that commits it (mongod), or entries sharing one ts and transaction number
    (SecantusDB). `complete`: no entry can follow these in the same transaction (the read
    was not cut short); else the last group is held back, it may go on."""
    out: list[OplogTransaction] = []
    open_chains: dict[tuple[bytes, int], list[dict[str, Any]]] = {}
    for entry in entries:
        key = _txn_key(entry)
        o = entry.get("o") or {}
        if key is not None and entry.get("op") == "c" and "applyOps" in o and o.get("partialTxn"):
            open_chains.setdefault(key, []).append(entry)
            continue
        chain = open_chains.pop(key, []) if key is not None else []
        last = out[-1] if out else None
        same = (
            key is not None
            and last is not None
            and last.xid == key[1]
            and last.commit_lsn == cluster_time(entry["ts"])
            and _txn_key(last.changes[-1]) == key
        )
        if same and last is not None:
            last.changes.append(entry)
            continue
        out.append(
            OplogTransaction(
                cluster_time(entry["ts"]), wall_time(entry), key[1] if key else None, [*chain, entry]
            )
        )
    if open_chains:  # a transaction whose commit is not read yet: nothing after its start
        first = min(e["ts"] for chain in open_chains.values() for e in chain)
        out = [t for t in out if parse_position(t.commit_lsn) < first]
    elif not complete and out:
        out = out[:-1]
    return out


def items(txn: OplogTransaction) -> int:
    return sum(replayable(entry) for entry in txn.changes)


def _filter(databases: list[str] | None, start: Timestamp) -> dict[str, Any]:
    """The entries of the captured databases after `start`, and the entry at `start` itself
    (found first, it proves the oplog still holds everything after it). A rename into a
    captured database is logged in the database it comes from: `o.to` finds it."""
    names = databases or []
    pattern = "^(" + "|".join(re.escape(db) for db in names) + r")\."
    if not names:  # every database but the server's own
        pattern = r"^(?!(" + "|".join(SYSTEM_DATABASES) + r")\.)[^.]+\."
    return {
        "ts": {"$gte": start},
        "$or": [
            {"ts": start},
            {"ns": {"$regex": pattern}, "op": {"$ne": "n"}},
            {"ns": "admin.$cmd", "o.applyOps": {"$exists": True}},
            {"op": "c", "o.to": {"$regex": pattern}},
        ],
    }


def read(
    client: Any, after: str, databases: list[str] | None, max_entries: int
) -> tuple[list[OplogTransaction], bool]:
    """Whole transactions after the position `after`, about `max_entries` entries at most,
    and whether the read was cut short (more may follow). Refused when the oplog no longer
    holds `after`'s entry: the changes between are lost."""
    start = parse_position(after)
    oplog = _oplog(client)
    entries: list[dict[str, Any]] = []
    found = False
    full = False
    with oplog.find(_filter(databases, start)).sort("$natural", 1).limit(max_entries + 1) as cursor:
        for entry in cursor:
            ts = entry["ts"]
            if not found:
                if ts != start:
                    raise RolledOver(
                        f"the oplog no longer holds its entry at {after}, where the capture stands: "
                        "it rolled over and the changes since are lost"
                    )
                found = True
            if ts == start:
                continue  # archived already (a transaction's entries may share its ts)
            if len(entries) >= max_entries:
                full = True
                break
            entries.append(entry)
    if not found:
        raise RolledOver(f"the oplog holds no entry at {after}, where the capture stands")
    return transactions(entries, complete=not full), full


class RolledOver(SourceError):
    """The oplog no longer holds the capture's resume point: changes were lost."""


def horizon(client: Any) -> tuple[str, str]:
    """How far the oplog is known, read before the entries: the newest majority-committed
    entry's position, and a time every write that committed by then is at or before it, or
    in what the read returns. That is a millisecond before the entry's wall clock (a later
    entry may share its millisecond); when the server said everything written is majority
    committed, it is a millisecond before the server's clock then, so a quiet replica set
    stays restorable to now."""
    hello = client.admin.command("hello")
    newest = next(iter(_oplog(client).find({}, {"ts": 1, "wall": 1}).sort("$natural", -1).limit(1)), None)
    if newest is None:
        raise SourceError("the source keeps no oplog: is it a replica set member?")
    at = datetime.fromisoformat(wall_time(newest))
    last = hello.get("lastWrite") or {}
    majority = (last.get("majorityOpTime") or {}).get("ts")
    now = _utc(hello.get("localTime"))
    if majority is not None and majority == (last.get("opTime") or {}).get("ts") and now is not None:
        at = max(at, now)
    return cluster_time(newest["ts"]), (at - timedelta(milliseconds=1)).isoformat()


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def headroom(client: Any, position: str) -> tuple[float, float] | None:
    """(seconds the capture is behind the newest entry, seconds the oplog holds): the capture
    is lost once the first reaches the second. None: the oplog is empty."""
    oplog = _oplog(client)
    oldest = next(iter(oplog.find({}, {"ts": 1}).sort("$natural", 1).limit(1)), None)
    newest = next(iter(oplog.find({}, {"ts": 1}).sort("$natural", -1).limit(1)), None)
    if oldest is None or newest is None:
        return None
    at = parse_position(position)
    return float(newest["ts"].time - at.time), float(newest["ts"].time - oldest["ts"].time)


def segment(from_position: str, batch: list[OplogTransaction]) -> Segment:
    """Whole transactions, as archived: gzip of their entries as concatenated BSON, which
    is mongodump's oplog.bson (mongorestore --oplogReplay reads it once unzipped)."""
    if not batch:
        raise ValueError("a segment holds at least one transaction")
    body = b"".join(txn.bson() for txn in batch)
    data = gzip.compress(body, compresslevel=6, mtime=0)
    return Segment(
        data=data,
        from_lsn=from_position,
        to_lsn=batch[-1].commit_lsn,
        first_commit=batch[0].commit_time,
        last_commit=batch[-1].commit_time,
        transactions=len(batch),
        items=sum(items(t) for t in batch),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def read_segment(data: bytes, sha256: str) -> list[OplogTransaction]:
    """A segment read back from storage: believed only once its checksum matches."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceError("a change segment does not match its recorded SHA-256")
    entries = list(bson.decode_all(gzip.decompress(data), UTC_CODEC))
    return transactions(entries, complete=True)


def unreplayable(txn: OplogTransaction, databases: list[str] | None) -> str | None:
    """Why a captured transaction cannot be replayed, or None: a rename into a captured
    database from one that is not brings documents the stream never held."""
    for entry in _flat(txn.changes):
        o = entry.get("o") or {}
        if entry.get("op") != "c":
            continue
        name = next(iter(o), "?")
        if name == "renameCollection":
            source_db, _ = split_name(str(o["renameCollection"]))
            if not _captured(source_db, databases) and _captured(split_name(str(o["to"]))[0], databases):
                return (
                    f"{o['to']} was renamed from {o['renameCollection']} at {txn.commit_lsn}, "
                    "a database the capture does not read: its documents are not in the stream"
                )
        elif name not in KNOWN_COMMANDS:
            return f"the oplog command {name!r} at {txn.commit_lsn} cannot be replayed"
    return None


def _flat(entries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for entry in entries:
        o = entry.get("o") or {}
        if entry.get("op") == "c" and "applyOps" in o:
            yield from _flat(list(o["applyOps"]))
        else:
            yield entry


def _captured(db: str, databases: list[str] | None) -> bool:
    return db in databases if databases else db not in SYSTEM_DATABASES
