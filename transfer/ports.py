"""The data plane's ports: what the runs ask of a source, a target and their sessions.

Every kind (`transfer/sources/`: ndjson, mongodb, postgres) implements them, and
`transfer/runs/` and `service/worker.py` use nothing else. A capability some kinds lack
is still a member: each implementation states its value (`parallel_safe = False`,
`has_schema = False`, a `begin()` that does nothing, `schema_notes()` answering None,
`cleanup_partials()` answering 0), so the runs never probe an object for what it can do.

mypy checks the implementations where they meet these types (transfer/sources/registry.py builds
every source and target; each `open()` says which session it yields); tests/test_ports.py
checks built instances at run time (the protocols are runtime-checkable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from transfer.storage.base import Partial


@dataclass(frozen=True)
class PointInTime:
    """Whether a snapshot is the source at one moment, and how that was made so. Manifests
    and Backup Records carry `as_dict()`."""

    consistent: bool
    how: str  # how it was made one point in time, or why it is not
    cluster_time: str | None = None  # MongoDB: "<seconds>.<increment>" of the last change captured
    changes: Iterator[bytes] | None = field(default=None, compare=False)  # raw oplog BSON to replay
    member: str | None = None  # MongoDB: the replica set member every read went to
    at: str | None = None  # MongoDB: the wall clock of the cluster time's entry (ISO 8601 UTC)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"consistent": self.consistent, "how": self.how}
        if self.cluster_time is not None:
            out["cluster_time"] = self.cluster_time
        if self.member is not None:
            out["read_from"] = self.member
        if self.at is not None:
            out["at"] = self.at
        return out


@runtime_checkable
class Writable(Protocol):
    """What a restore session's `open_out()` yields: the collection's bytes are written into it."""

    def write(self, data: bytes, /) -> object:
        """Takes the next piece of the collection's stream (whatever it answers is ignored)."""
        ...


@runtime_checkable
class BackupSession(Protocol):
    """One backup's view of a source: a consistent read of its collections."""

    parallel_safe: bool  # collections may be read from several threads at once
    isolated_collections: bool  # a read fault fails only its collection (a partial snapshot), not the run
    has_schema: bool  # has database-wide schema members: schema_members() is worth calling

    def estimates(self) -> dict[str, int]:
        """Every collection this session can read, with a size estimate (for progress)."""
        ...

    def definition(self, collection: str) -> bytes | None:
        """The collection's own definition (options, indexes), archived beside it; None: none."""
        ...

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """The collection's bytes as archived, reporting the source bytes consumed as it goes."""
        ...

    def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
        """The database-wide schema members (name, data) for these collections; [] without
        a schema. Called only when `has_schema` (it may be expensive: pg_dump)."""
        ...

    def point_in_time(self) -> PointInTime:
        """Once, after the last collection was read: whether the snapshot is one point in
        time, and how. MongoDB also gives the changes made while it was read, to replay."""
        ...


@runtime_checkable
class Source(Protocol):
    """A configured place snapshots are taken from."""

    name: str  # the configured name, as messages and events give it
    kind: str  # "ndjson", "postgresql" or "mongodb": the archive's source_kind
    parallel: int  # how many collections the worker lets a backup stage at once

    def open(self) -> AbstractContextManager[BackupSession]:
        """A backup session, closed (and its transaction ended) when the block ends."""
        ...


@runtime_checkable
class RestoreSession(Protocol):
    """One restore into a target: collections are prepared, written, counted, then committed."""

    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        """Once, before the first collection: the archive's schema members (checked), the
        selected collections (None: all) and their renames; a no-op for kinds without a schema."""
        ...

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        """Readies one collection (under `as_name` when renamed), applying the existing policy."""
        ...

    def open_out(self, collection: str) -> AbstractContextManager[Writable]:
        """Where the prepared collection's bytes go; leaving the block ends its load."""
        ...

    def open_changes(self) -> AbstractContextManager[Writable]:
        """Where the changes made while the snapshot was read go (MongoDB: oplog entries), after
        every collection; they are replayed on commit(), once the counts are checked. Kinds
        whose snapshots carry no changes refuse them."""
        ...

    def count_items(self, collection: str) -> int:
        """Items this restore wrote into the collection, read back from the target itself."""
        ...

    def commit(self) -> None:
        """Makes the restore visible (or disarms its rollback, where writes land in place)."""
        ...

    def schema_notes(self) -> dict[str, Any] | None:
        """What a schema-carrying target reports after commit (skipped objects, roles); None: nothing."""
        ...


@runtime_checkable
class Target(Protocol):
    """A configured place snapshots are restored into."""

    name: str  # the configured name, as messages and events give it
    kind: str  # "ndjson", "postgresql" or "mongodb": which snapshots it takes
    transactional: bool  # False: a failed restore can leave writes, so the archive is verified first

    def open(
        self,
        source_kind: str,
        existing: str | None = None,
        *,
        format_version: int = 2,
        keep_owners: bool | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
        run_id: str = "",
        sizes: dict[str, int] | None = None,
        validate: bool = False,
    ) -> AbstractContextManager[RestoreSession]:
        """A restore session for a snapshot of `source_kind` (another kind is refused before
        anything else); `existing` overrides the configured policy. Every restore passes
        every keyword; each kind uses those that apply to it and ignores the others:
        `on_plan` and `resume` (a re-claimed attempt undoes what the dead one recorded)
        PostgreSQL and MongoDB, `validate` MongoDB, the rest PostgreSQL."""
        ...

    def cleanup_partials(self) -> int:
        """Before a re-claimed restore: removes what dead attempts left; answers how many (0: none)."""
        ...

    def list_partials(self) -> list[Partial]:
        """Unfinished writes a restore left aside (none where writes land in place), so the
        orphan sweep removes those of restores that died without their owner's help."""
        ...

    def remove_partial(self, partial: Partial) -> bool:
        """Removes one listed unfinished write; False: it was gone already (published or
        removed by its restore meanwhile)."""
        ...


@runtime_checkable
class MemberSink(Protocol):
    """What `archive.read_members` streams an archive into: a restore session adapted by the
    pipeline (renames and selection applied), or one that writes nowhere (verify, dry run)."""

    def begin(self, schema: dict[str, bytes]) -> None:
        """Once, before the first collection, with the archive's schema members (checked)."""
        ...

    def prepare(self, collection: str, definition: bytes | None) -> None:
        """Readies one archived collection for its bytes."""
        ...

    def open_out(self, collection: str) -> AbstractContextManager[Writable]:
        """Where the collection's decompressed bytes go."""
        ...

    def open_changes(self) -> AbstractContextManager[Writable]:
        """Where the archive's changes to replay go (MongoDB's oplog member)."""
        ...
