"""One step of a policy's continuous capture: the changes since the last archived segment,
archived as the next segment, recorded, and only then released by the source.

The order is the whole guarantee. A segment is written to storage first (durable once its
writer commits), recorded second (`ChangesArchived`, fenced like any append), and the slot
is advanced last. A worker killed between any two of these leaves the slot behind what is
recorded, never ahead of what storage holds: the next attempt peeks again from the slot and
skips every transaction the events already hold, so nothing is lost or applied twice.

A capture that cannot archive (storage unreachable) keeps WAL on the source. Above half of
`max_slot_wal_mb` a step says so (alarm); at the limit the capture fails, loudly, and its slot
is dropped, so the source's disk never fills for a backup.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from transfer.archive.crypto import Keyring, Signer, aead_context
from transfer.errors import SourceError
from transfer.segments import Segment
from transfer.sources.postgres import capture
from transfer.sources.postgres.capture import Transaction, lsn_value
from transfer.sources.postgres.decoding import DecodingError, parse_change
from transfer.storage.base import Storage
from transfer.storage.layout import changes_key, segment_manifest_key, segment_signature_key

MIB = 1024 * 1024
SEGMENT_FORMAT = "snapledger-segment/1"


class CaptureRecorder(Protocol):
    """Where a capture's progress is recorded: the Capture aggregate's events."""

    def position(self) -> str: ...

    def archived(self, facts: dict[str, Any]) -> None: ...

    def failed(self, reason: str) -> None: ...

    def checked(self, lsn: str, at: str) -> None: ...

    def checked_at(self) -> str | None: ...


class CaptureFailed(Exception):
    """The capture ended (its slot is dropped); the reason is recorded."""


@dataclass(frozen=True)
class CaptureSettings:
    segment_bytes: int = 16 * MIB  # a segment closes at the first whole transaction past this
    max_slot_wal_mb: int = 1024
    max_changes: int = 50_000  # rows decoded per step, at most (whole transactions)
    checkpoint_seconds: float = 60  # an idle source: how often "nothing new until now" is recorded


@dataclass(frozen=True)
class StepResult:
    segment: dict[str, Any] | None  # what was archived, if anything
    retained_wal_bytes: int | None  # PostgreSQL: the slot's; MongoDB keeps no slot (None)
    lag_seconds: float | None  # age of the oldest change not yet archived (None: none waiting)
    alarm: str | None  # retained WAL past half the limit; MongoDB: the oplog half spent
    more: bool  # the step left changes for the next one (a backlog): step again now
    reshaped: str | None = None  # a captured table changed shape: the window ends here, why


class ArchivingTask:
    """What every source's capture step shares: a segment stored (encrypted and locked as
    the location's archives are) before it is recorded, and the lag of what waits."""

    def __init__(
        self,
        policy: str,
        storage: Storage,
        recorder: CaptureRecorder,
        settings: CaptureSettings | None = None,
        keyring: Keyring | None = None,
        capture_id: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        lock_until: Callable[[], datetime] | None = None,
        signer: Signer | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.storage = storage
        self.recorder = recorder
        self.settings = settings or CaptureSettings()
        self.keyring = keyring
        self.capture_id = capture_id
        self.now = now
        # An object-lock location locks each segment as it locks archives; by default for
        # the location's object_lock_days from when it is written.
        self.lock_until = lock_until or (lambda: self.now() + timedelta(days=storage.lock_days))
        self.signer = signer
        # What each segment's manifest says it belongs to (capture, policy, snapshot, window),
        # so the bucket alone can tell a resync which snapshot the segment follows.
        self.identity = dict(identity or {})

    def check(self) -> tuple[int | None, str | None]:
        raise NotImplementedError

    def step(self) -> StepResult:
        raise NotImplementedError

    def _idle(self, until_lsn: str, until_time: str, full: bool, reshaped: str | None) -> None:
        """Nothing to archive: an idle source is recorded as restorable to now, at most once
        a checkpoint interval (so events stay bounded by segments)."""
        last = self.recorder.checked_at()
        due = (
            last is None
            or (datetime.fromisoformat(until_time) - datetime.fromisoformat(last)).total_seconds()
            >= self.settings.checkpoint_seconds
        )
        if due and not full and reshaped is None:
            self.recorder.checked(until_lsn, until_time)

    def _store(self, key: str, segment: Segment, extra: dict[str, Any]) -> dict[str, Any]:
        """The segment, then (on a signing location) its manifest's signature, then its
        manifest, the commit marker a catalog resync reads: all durable, and on an
        object-lock location locked, when this returns its facts. What could not be
        written or locked is removed again, unrecorded, as an archive's would be."""
        facts = {**segment.facts(), **self._write(key, segment), "key": key, **extra}
        manifest = json.dumps(
            {"format": SEGMENT_FORMAT, **self.identity, "segment": facts}, sort_keys=True, indent=1
        ).encode()
        written = [key]
        try:
            if self.signer is not None:
                self.storage.put_bytes(segment_signature_key(key), self.signer.sign(manifest))
                written.append(segment_signature_key(key))
            self.storage.put_bytes(segment_manifest_key(key), manifest)
            written.append(segment_manifest_key(key))
            if self.storage.lock_mode:
                for name in written:
                    self.storage.lock(name, self.lock_until())
        except Exception:
            for name in reversed(written):
                with contextlib.suppress(Exception):  # what stays is reported incomplete by a resync
                    self.storage.delete(name)
            raise
        return facts

    def _write(self, key: str, segment: Segment) -> dict[str, Any]:
        """Encrypted as the location's archives are; `sha256` and `bytes` then describe the
        stored object, `plain_sha256` the segment inside."""
        writer = self.storage.open_writer(key)
        try:
            if self.keyring is not None and self.keyring.key_id:
                sealed = self.keyring.encrypting(writer, context=aead_context(key, self.capture_id))
                sealed.write(segment.data)
                sealed.commit()
                return {
                    "sha256": sealed.sha256,
                    "bytes": sealed.bytes_written,
                    "plain_sha256": segment.sha256,
                    "encryption": self.keyring.manifest_entry(bound=True),
                }
            writer.write(segment.data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return {}

    def _lag_since(self, oldest_commit: str | None) -> float | None:
        if oldest_commit is None:
            return None
        return max(0.0, (self.now() - datetime.fromisoformat(oldest_commit)).total_seconds())


class CaptureTask(ArchivingTask):
    """PostgreSQL: a logical slot, released only past what is stored and recorded."""

    def __init__(
        self,
        conn: psycopg.Connection,
        slot: str,
        policy: str,
        storage: Storage,
        recorder: CaptureRecorder,
        settings: CaptureSettings | None = None,
        keyring: Keyring | None = None,
        capture_id: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        lock_until: Callable[[], datetime] | None = None,
        signer: Signer | None = None,
        identity: dict[str, Any] | None = None,
        shapes: dict[tuple[str, str], tuple[tuple[str, str], ...]] | None = None,
    ) -> None:
        super().__init__(
            policy, storage, recorder, settings, keyring, capture_id, now, lock_until, signer, identity
        )
        self.conn = conn
        self.slot = slot
        # Each captured table's columns as the window first saw them: from the segments'
        # records (`shapes_of`), so a change of shape while no worker ran is still caught.
        self.shapes: dict[tuple[str, str], tuple[tuple[str, str], ...]] = dict(shapes or {})
        self.learned: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}  # this batch's first sightings

    def check(self) -> tuple[int, str | None]:
        """The slot's retained WAL and an alarm past half the limit; at the limit the
        capture fails and the slot is dropped. Called by every step, and by the loop when
        a step could not archive (storage unreachable), so the alarm is not lost with it."""
        retained = capture.retained_wal_bytes(self.conn, self.slot)
        if retained is None:
            reason = f"replication slot {self.slot!r} is gone from the source: the stream has a gap"
            self.recorder.failed(reason)
            raise CaptureFailed(reason)
        limit = self.settings.max_slot_wal_mb * MIB
        if retained >= limit:
            reason = (
                f"replication slot {self.slot!r} holds {retained / MIB:.1f} MiB of WAL on the source, "
                f"past max_slot_wal_mb = {self.settings.max_slot_wal_mb}: the capture is ended and "
                "its slot dropped so the source's disk does not fill; the next snapshot starts a new window"
            )
            self.recorder.failed(reason)
            capture.drop_slot(self.conn, self.slot)
            raise CaptureFailed(reason)
        alarm = None
        if retained >= limit // 2:
            alarm = (
                f"replication slot {self.slot!r} holds {retained / MIB:.1f} MiB of WAL "
                f"(max_slot_wal_mb = {self.settings.max_slot_wal_mb}): the capture is not keeping up"
            )
        return retained, alarm

    def step(self) -> StepResult:
        retained, alarm = self.check()
        position = self.recorder.position()
        confirmed = capture.confirmed_lsn(self.conn, self.slot)
        if confirmed is not None and lsn_value(confirmed) < lsn_value(position):
            capture.advance(self.conn, self.slot, position)  # recorded, then killed before this
        until_lsn, until_time = capture.horizon(self.conn)  # before the peek: all of it is in there
        peeked = capture.peek(self.conn, self.slot, self.settings.max_changes)
        fresh = [t for t in peeked if lsn_value(t.commit_lsn) > lsn_value(position)]
        batch, reshaped = self._same_shapes(self._bounded(fresh))
        full = sum(len(t.changes) for t in peeked) >= self.settings.max_changes  # the server may hold more
        if not batch:
            self._idle(until_lsn, until_time, full, reshaped)
            return StepResult(None, retained, None, alarm, more=False, reshaped=reshaped)
        segment = capture.segment(position, batch)
        key = changes_key(self.policy, segment.from_lsn, segment.to_lsn)
        waiting = fresh[len(batch) :]
        extra: dict[str, Any] = {}
        if not waiting and not full and reshaped is None:  # nothing else committed up to the horizon
            extra = {"until_lsn": until_lsn, "until_time": until_time}
        if self.learned:  # recorded, so a worker that takes over knows every shape of the window
            extra["shapes"] = [
                {"table": list(table), "columns": [list(c) for c in columns]}
                for table, columns in sorted(self.learned.items())
            ]
        facts = self._store(key, segment, extra)
        self.recorder.archived(facts)
        self.shapes.update(self.learned)
        capture.advance(self.conn, self.slot, segment.to_lsn)
        more = bool(waiting) or full
        lag = self._lag_since(waiting[0].commit_time if waiting else None)
        return StepResult(facts, retained, lag, alarm, more=more, reshaped=reshaped)

    def _same_shapes(self, transactions: list[Transaction]) -> tuple[list[Transaction], str | None]:
        """The transactions before the first row whose table has other columns (or types)
        than earlier rows of this window had: DDL is not in the stream, so the window ends
        there, and a new snapshot starts the next one. Each line to archive is read here,
        once: one that is not test_decoding's fails the step while the source still holds it."""
        known = dict(self.shapes)
        learned: dict[tuple[str, str], tuple[tuple[tuple[str, str], ...], int]] = {}
        for index, txn in enumerate(transactions):
            for line in txn.changes:
                try:
                    change = parse_change(line)
                except DecodingError as e:
                    raise SourceError(f"slot {self.slot!r}: {e}") from None
                if change.action == "TRUNCATE":
                    continue
                shape = tuple((c.name, c.type) for c in (change.new or change.old))
                if change.action == "DELETE" or (change.action == "UPDATE" and not change.new):
                    continue  # a key alone says nothing of the other columns
                if change.table not in known:
                    known[change.table] = shape
                    learned[change.table] = (shape, index)
                    continue
                if shape != known[change.table]:
                    name = ".".join(change.table)
                    self.learned = {t: found for t, (found, at) in learned.items() if at < index}
                    return transactions[:index], (
                        f"{name} changed shape at commit {txn.commit_lsn} (transaction {txn.xid}): "
                        f"columns {_columns(known[change.table])} became {_columns(shape)}; DDL is not "
                        "captured, so the window ends before it and a new snapshot starts the next"
                    )
        self.learned = {t: found for t, (found, _) in learned.items()}
        return transactions, None

    def _bounded(self, transactions: list[Transaction]) -> list[Transaction]:
        out, size = [], 0
        for txn in transactions:
            out.append(txn)
            size += sum(len(line) for line in txn.changes)
            if size >= self.settings.segment_bytes:
                break
        return out


def shapes_of(segments: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """The table shapes a window's segments recorded as they first saw each table."""
    out: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    for segment in segments:
        for entry in segment.get("shapes") or []:
            schema, table = entry["table"]
            out.setdefault((schema, table), tuple((str(n), str(t)) for n, t in entry["columns"]))
    return out


def _columns(shape: tuple[tuple[str, str], ...]) -> str:
    return "(" + ", ".join(f"{name} {type_}" for name, type_ in shape) + ")"


def read_segment(
    storage: Storage,
    facts: dict[str, Any],
    keyring: Keyring | None = None,
    capture_id: str = "",
    decode: Callable[[bytes, str], list[Any]] = capture.read_segment,
) -> list[Any]:
    """A recorded segment read back: the stored object's checksum first, then (encrypted)
    the segment's own, before a single change is believed. `decode` is the source's:
    PostgreSQL's by default, MongoDB's oplog in transfer/sources/mongodb/capture.py."""
    import hashlib

    from transfer.archive.crypto import DecryptingReader
    from transfer.errors import SourceError

    data = storage.get_bytes(facts["key"])
    if hashlib.sha256(data).hexdigest() != facts["sha256"]:
        raise SourceError(f"change segment {facts['key']!r} does not match its recorded SHA-256")
    if "encryption" in facts:
        if keyring is None:
            raise SourceError(f"change segment {facts['key']!r} is encrypted and no key is configured")
        reader = DecryptingReader(
            io.BytesIO(data), keyring, facts["encryption"]["key_id"], aead_context(facts["key"], capture_id)
        )
        return decode(reader.read(), facts["plain_sha256"])
    return decode(data, facts["sha256"])
