"""A segment of captured changes, whatever the source: whole transactions, compressed as the
source's own log writes them, with the facts its ChangesArchived event records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Segment:
    """Whole transactions as archived (PostgreSQL: JSON lines; MongoDB: oplog BSON), gzipped.
    Positions are the source's own: a WAL position, or an oplog ts."""

    data: bytes
    from_lsn: str  # the slot's position before the first transaction
    to_lsn: str  # the last transaction's commit
    first_commit: str
    last_commit: str
    transactions: int
    items: int
    sha256: str

    def facts(self) -> dict[str, Any]:
        return {
            "from_lsn": self.from_lsn,
            "to_lsn": self.to_lsn,
            "first_commit": self.first_commit,
            "last_commit": self.last_commit,
            "transactions": self.transactions,
            "items": self.items,
            "bytes": len(self.data),
            "sha256": self.sha256,
        }


def position_order(position: str) -> int:
    """A WAL position (16/B374D848) or an oplog ts (1796142873.11) as a number that orders
    as the source's positions do; ValueError for anything else."""
    if "/" in position:
        high, _, low = position.partition("/")
        return (int(high, 16) << 32) | int(low, 16)
    seconds, dot, increment = position.partition(".")
    if not dot or not seconds.isdigit() or not increment.isdigit():
        raise ValueError(f"{position!r} is not a WAL position or an oplog ts")
    return (int(seconds) << 32) | int(increment)
