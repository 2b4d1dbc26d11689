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
