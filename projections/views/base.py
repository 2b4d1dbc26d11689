"""What every record view is made of: the View (its tables, DDL and handlers) and the
small helpers handlers share (times as text, ids, failure reasons, compact JSON).

Handlers change rows by key through `Rows` (projections/rowbuffer.py), which merges a
batch's changes per row and writes them once; each insert is idempotent (ON CONFLICT), so
replaying a batch that a concurrent runner already applied leaves the same rows."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.run import HAS_ARCHIVE
from projections.rowbuffer import Rows

# The states whose archive is kept, as an SQL list for `status IN ...` (from the domain).
ARCHIVED_SQL = "(" + ", ".join(f"'{s}'" for s in HAS_ARCHIVE) + ")"

Handler = Callable[[Rows, Any, int], None]


def iso(value: datetime | None) -> str | None:
    return _iso(value) if value else None


# Several views format the same event's id and time: a replay spends whole percents on it.
@functools.lru_cache(maxsize=1024)
def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=1024)
def _text(value: UUID) -> str:
    return str(value)


def oid(e: Any) -> str:
    """The event's aggregate id as the views store it."""
    return _text(e.originator_id)


def failure_reason(e: Any) -> str:
    """A failed run's reason, or the collections a partially failed one left out."""
    failed = getattr(e, "failed_collections", None)
    if failed:
        return "collections failed: " + "; ".join(f"{name} ({why})" for name, why in sorted(failed.items()))
    reason: str = e.reason
    return reason


_ENCODER = json.JSONEncoder(sort_keys=True, default=str)  # json.dumps builds one per call


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


@dataclass
class View:
    """A named read model: its tables, and one handler per event type it follows."""

    name: str
    table: str
    ddl: list[str]
    version: int = 1  # bump when ddl changes: the runner rebuilds the view from events
    # Its share of a replay's handler and write work on a typical log (measured on the
    # bench's mix: backups alone costs as much as the three others), to split a rebuild.
    cost: int = 1
    # A view that deletes an aggregate's row for good on one of `ends` (never to write it
    # again) and creates it on one of `starts`: a batch may skip what such a row's last
    # moments change (see projections.runner.voided).
    starts: frozenset[str] = frozenset()
    ends: frozenset[str] = frozenset()
    extra_tables: list[str] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        return [self.table, *self.extra_tables]

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for t in event_types:
                self.handlers[t] = fn
            return fn

        return register


def _update(rows: Rows, table: str, row_id: str, position: int, **values: Any) -> None:
    values["position"] = position
    rows.update(table, row_id, values)
