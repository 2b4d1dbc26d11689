"""Continuous capture from a PostgreSQL source by logical decoding (wal_level = logical).

The slot is created on a replication connection with an exported snapshot, and the
snapshot's data is read in that very snapshot (PostgresSource.joined): a transaction is
in the snapshot exactly when it committed before the slot's consistent point, and in the
stream exactly when it committed after, so the two meet with no gap and no overlap.

Changes are read with `pg_logical_slot_peek_changes`, which returns whole transactions,
and the slot is advanced (`pg_replication_slot_advance`) only to the commit of a segment
that is already durable in storage and recorded: the source keeps every change that is not.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from transfer.errors import SourceError
from transfer.segments import Segment
from transfer.sources.postgres.connection import conninfo, scalar
from transfer.sources.postgres.decoding import Change, parse_change

PLUGIN = "test_decoding"
_OPTIONS = ("include-xids", "1", "include-timestamp", "1", "skip-empty-xacts", "1")


@dataclass(frozen=True)
class Slot:
    name: str
    consistent_lsn: str  # the snapshot's position: the stream starts after it
    snapshot: str  # the exported snapshot's name, valid while the slot's connection is open


@dataclass
class Transaction:
    xid: int
    commit_lsn: str
    commit_time: str  # ISO 8601, UTC
    changes: list[str] = field(default_factory=list)  # test_decoding's lines, as written

    def parsed(self) -> list[Change]:
        return [parse_change(line) for line in self.changes]


def lsn_value(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@contextmanager
def create_slot(url: str, password: str | None, name: str) -> Iterator[Slot]:
    """A logical slot and its exported snapshot. The snapshot lives until this context
    exits: import it (SET TRANSACTION SNAPSHOT) inside. The slot outlives it."""
    try:
        conn = psycopg.connect(conninfo(url, password), replication="database", autocommit=True)
    except psycopg.OperationalError as e:
        raise SourceError(f"cannot open a replication connection: {str(e).splitlines()[0]}") from None
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        result = conn.pgconn.exec_(
            f"CREATE_REPLICATION_SLOT {quoted} LOGICAL {PLUGIN} (SNAPSHOT 'export')".encode()
        )
        if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise SourceError(f"cannot create replication slot {name!r}: {message}")
        values = [(result.get_value(0, i) or b"").decode() for i in range(result.nfields)]
        yield Slot(name=values[0], consistent_lsn=values[1], snapshot=values[2])
    finally:
        conn.close()


def drop_slot(conn: psycopg.Connection, name: str) -> bool:
    """Drops the slot if it is there; a stopped or deleted capture must not hold WAL."""
    found = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()
    if found is None:
        return False
    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    return True


def retained_wal_bytes(conn: psycopg.Connection, name: str) -> int | None:
    """WAL the source keeps for the slot (from its restart point to now); None: no slot."""
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (name,),
    ).fetchone()
    return None if row is None else int(row[0] or 0)


def confirmed_lsn(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
    ).fetchone()
    return None if row is None else str(row[0])


def peek(conn: psycopg.Connection, name: str, max_changes: int = 10_000) -> list[Transaction]:
    """Whole transactions after the slot's confirmed position, about `max_changes` rows
    at most (the server finishes the transaction it is in). The slot does not move."""
    conn.execute("SET TimeZone = 'UTC'")
    rows = conn.execute(
        "SELECT lsn::text, xid::text::bigint, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, "
        + ", ".join(["%s"] * len(_OPTIONS))
        + ")",
        (name, max_changes, *_OPTIONS),
    ).fetchall()
    out: list[Transaction] = []
    current: Transaction | None = None
    for lsn, xid, data in rows:
        if data.startswith("BEGIN "):
            current = Transaction(int(xid), "", "")
        elif data.startswith("COMMIT "):
            if current is None:
                raise SourceError(f"slot {name!r}: a COMMIT without its BEGIN at {lsn}")
            current.commit_lsn = lsn
            current.commit_time = _commit_time(data)
            out.append(current)
            current = None
        elif current is not None:
            if data.startswith("table "):  # read (and refused if unreadable) by the capture step
                current.changes.append(data)
            # "message:" lines (pg_logical_emit_message) carry no row change
        else:
            raise SourceError(f"slot {name!r}: a change outside a transaction at {lsn}")
    if current is not None:
        raise SourceError(f"slot {name!r}: the server cut transaction {current.xid} short")
    return out


def _commit_time(line: str) -> str:
    """ "COMMIT 725 (at 2026-12-01 19:57:28.905233+00)" -> ISO 8601 UTC."""
    start = line.find("(at ")
    if start < 0 or not line.endswith(")"):
        raise SourceError(f"commit without its time: {line!r} (include-timestamp is off?)")
    text = line[start + 4 : -1]
    moment = datetime.fromisoformat(text if not text.endswith("+00") else text + ":00")
    return moment.isoformat()


def horizon(conn: psycopg.Connection) -> tuple[str, str]:
    """The server's WAL position and time now: read before a peek, every transaction that
    committed at or before it is in what the peek returns (or was archived before)."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text, now()").fetchone()
    assert row is not None
    return str(row[0]), row[1].isoformat()


def advance(conn: psycopg.Connection, name: str, lsn: str) -> None:
    """Moves the slot past the transaction that committed at `lsn`: call it only once the
    segment holding that transaction is durable and recorded."""
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, lsn))


def segment(from_lsn: str, transactions: list[Transaction]) -> Segment:
    if not transactions:
        raise ValueError("a segment holds at least one transaction")
    body = b"".join(
        json.dumps(
            {"xid": t.xid, "lsn": t.commit_lsn, "at": t.commit_time, "changes": t.changes},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for t in transactions
    )
    data = gzip.compress(body, compresslevel=6, mtime=0)
    return Segment(
        data=data,
        from_lsn=from_lsn,
        to_lsn=transactions[-1].commit_lsn,
        first_commit=transactions[0].commit_time,
        last_commit=transactions[-1].commit_time,
        transactions=len(transactions),
        items=sum(len(t.changes) for t in transactions),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def read_segment(data: bytes, sha256: str) -> list[Transaction]:
    """A segment read back from storage: believed only once its checksum matches."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceError("a change segment does not match its recorded SHA-256")
    out = []
    for line in gzip.decompress(data).splitlines():
        doc = json.loads(line)
        out.append(Transaction(int(doc["xid"]), str(doc["lsn"]), str(doc["at"]), list(doc["changes"])))
    return out


def current_lsn(conn: psycopg.Connection) -> str:
    return str(scalar(conn.execute("SELECT pg_current_wal_lsn()::text")))
