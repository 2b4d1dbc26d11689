"""Backup and restore runs: source -> archive -> storage, and storage -> archive -> target.

They know nothing about events: the worker passes a progress callback and a stop check.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

from transfer.archive import (
    ArchiveError,
    ArchiveWriter,
    manifest_key,
    parse_manifest,
    read_members,
    signature_key,
)
from transfer.crypto import DecryptingReader, Keyring, Signer, aead_context, require_key
from transfer.errors import AlreadyRestored, SourceError, Stopped
from transfer.ports import BackupSession, MemberSink, RestoreSession, Source, Target, Writable
from transfer.prefetch import prefetch
from transfer.storage import Storage, StorageError

Report = Callable[[int, int, float, "str | None"], None]
ShouldStop = Callable[[], bool]
VERSION = "0.1.0"


class CollectionFailed(Exception):
    """One collection could not be read; the others still make a (partial) snapshot."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


# What reading one collection can fail with while the others stay readable: a damaged or
# vanished file, a bad compressed stream, a source-side refusal. Storage errors and stops
# are not among them: they end the whole run.
COLLECTION_FAULTS = (SourceError, OSError, EOFError, zlib.error)


def _reason(e: BaseException) -> str:
    kind = type(e).__name__
    if kind == "error":  # zlib.error and friends name only their module
        kind = f"{type(e).__module__}.error"
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return f"{kind}: {text}" if text else kind


class ConsistencyError(Exception):
    """The target's item counts differ from the manifest after a restore."""


@dataclass
class BackupResult:
    items: int
    bytes: int
    sha256: str
    collections: dict[str, dict[str, Any]]
    manifest: builtins.bytes  # the field `bytes` above hides the type in this class's body
    failed: dict[str, str] = field(default_factory=dict)  # collections left out, with reasons
    version_id: str | None = None  # of the archive object, on a versioned S3 bucket
    manifest_version_id: str | None = None

    @property
    def seal(self) -> dict[str, Any]:
        """What the completion event records, so that reading back believes nothing stored
        beside the archive: the manifest's SHA-256 and whether (and with which key) it is
        encrypted."""
        encryption = parse_manifest(self.manifest).get("encryption")
        return {
            "manifest_sha256": hashlib.sha256(self.manifest).hexdigest(),
            "encryption_key_id": encryption.get("key_id") if encryption else None,
            "aead_context": encryption.get("aad") if encryption else None,
            "version_id": self.version_id,  # read back pinned: an overwrite since is not read
            "manifest_version_id": self.manifest_version_id,
        }


@dataclass
class Expected:
    """What the event store says an archive is; None where an old snapshot did not say."""

    sha256: str | None = None  # of the stored object (ciphertext when encrypted)
    manifest_sha256: str | None = None
    encrypted: bool | None = None
    key_id: str | None = None
    context: bytes = b""  # binds an encrypted archive to its key and snapshot (AEAD data)
    trusted: bool = True  # False: imported without a signature (restored only when trusted)
    verify_first: bool = False  # read and authenticate the whole archive before writing
    version_id: str | None = None  # S3 versions recorded at completion: what is read
    manifest_version_id: str | None = None

    @classmethod
    def of(cls, snapshot: Any, archive_key: str) -> Expected:
        """From the snapshot's events. A snapshot this installation wrote is sealed at
        completion. An imported one keeps what its manifest said when it was imported, so
        a later change is refused; one imported unsigned or authenticated only by its
        encryption is read in full before anything is written."""
        seal = getattr(snapshot, "seal", None) or {}
        verification = getattr(snapshot, "verification", None)
        if not seal:
            return cls(sha256=getattr(snapshot, "sha256", None) or None, trusted=verification != "unverified")
        encrypted = seal.get("encryption_key_id") is not None
        written_as = seal.get("snapshot_id") or str(snapshot.id)
        context = aead_context(archive_key, written_as) if seal.get("aead_context") else b""
        return cls(
            sha256=getattr(snapshot, "sha256", None) or None,
            manifest_sha256=seal.get("manifest_sha256"),
            encrypted=encrypted,
            key_id=seal.get("encryption_key_id"),
            context=context,
            trusted=verification != "unverified",
            verify_first=verification in ("encrypted", "unverified"),
            version_id=seal.get("version_id"),
            manifest_version_id=seal.get("manifest_version_id"),
        )


@dataclass
class RestoreResult:
    items: int
    bytes: int
    collections: dict[str, dict[str, Any]]
    schema: dict[str, Any] | None = None  # what a schema-carrying target says: skipped objects, roles


def select_collections(
    available: dict[str, Any], include: list[str], exclude: list[str], source: str
) -> list[str]:
    missing = [c for c in include if c not in available]
    if missing:
        raise SourceError(f"source {source!r} has no collection {missing[0]!r}")
    names = [c for c in available if (not include or c in include) and c not in exclude]
    if not names:
        raise SourceError(f"no collection of source {source!r} is selected")
    return names


def run_backup(
    source: Source,
    storage: Storage,
    archive_key: str,
    include: list[str],
    exclude: list[str],
    header: dict[str, Any],
    report: Report,
    should_stop: ShouldStop,
    codec: str = "gzip",
    level: int = 6,
    parallel: int = 1,
    keyring: Keyring | None = None,
    signer: Signer | None = None,
    before_commit: Callable[[], None] = lambda: None,
) -> BackupResult:
    """Collections compress in parallel (up to `parallel`) when the source session allows
    it; the tar is still written by this thread alone, member by member.

    With a keyring that has an encryption key the tar is encrypted on its way to the
    store; the manifest says with which key id, and the result's sha256 and bytes are
    those of the stored (encrypted) object."""
    writer = storage.open_writer(archive_key)
    snapshot_id = str(header.get("snapshot_id") or "")
    context = aead_context(archive_key, snapshot_id) if snapshot_id else b""
    encrypted = (
        keyring.encrypting(writer, context=context) if keyring is not None and keyring.key_id else None
    )
    if encrypted is not None:
        assert keyring is not None
        header = {**header, "encryption": keyring.manifest_entry(bound=bool(context))}
    sink = encrypted or writer
    archive: ArchiveWriter | None = None
    committed = False
    manifest_version: str | None = None
    consumed = 0
    failed: dict[str, str] = {}  # collection -> reason, when the source isolates collections
    started = datetime.now(UTC)
    lock = threading.Lock()  # progress, stop checks and counters are shared by the stagers
    abort = threading.Event()

    def on_raw(n: int) -> None:
        nonlocal consumed
        with lock:
            consumed += n

    try:
        with source.open() as session:
            estimates = session.estimates()
            names = select_collections(estimates, include, exclude, source.name)
            total = sum(estimates[n] for n in names) or 1
            definitions = {name: session.definition(name) for name in names}
            archive = ArchiveWriter(sink, source_kind=source.kind, codec=codec, level=level)
            workers = min(parallel, len(names)) if session.parallel_safe else 1
            schema = _Schema(session, names, archive, overlap=workers > 1)

            isolated = session.isolated_collections

            def chunks(name: str) -> Iterator[bytes]:
                try:
                    for chunk in prefetch(session.read_chunks(name, on_raw)):
                        with lock:
                            if abort.is_set() or should_stop():
                                raise Stopped
                        yield chunk
                        with lock:  # after the chunk was counted, so items never lag the percent
                            percent = min(99.0, 100.0 * consumed / total)
                            report(archive.items, archive.bytes_so_far, percent, name)
                except COLLECTION_FAULTS as e:
                    if not isolated:
                        raise
                    raise CollectionFailed(name, _reason(e)) from e

            if workers <= 1:
                schema.written()
                for name in names:
                    try:
                        archive.add_collection(name, chunks(name), definitions[name])
                    except CollectionFailed as e:
                        failed[e.name] = e.reason
            else:  # biggest first, as pg_dump -j orders them: the last to finish is a small one
                by_size = sorted(names, key=lambda n: -estimates[n])
                try:
                    _stage_in_parallel(
                        archive, by_size, chunks, definitions, workers, abort, failed, schema.written
                    )
                finally:
                    schema.close()
            schema.written()
        if should_stop():
            raise Stopped
        if failed and len(failed) == len(names):
            raise SourceError("every collection failed: " + "; ".join(f"{n}: {r}" for n, r in failed.items()))
        manifest, sha256, size = archive.finish(
            {
                **header,
                **({"failed_collections": failed} if failed else {}),
                "source_kind": source.kind,
                "started_at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "snapledger_version": VERSION,
            }
        )
        before_commit()  # a fenced attempt raises here, before it replaces a newer one's archive
        sink.commit()
        committed = True
        if signer is not None:  # before the manifest: a committed archive is always signed
            storage.put_bytes(signature_key(archive_key), signer.sign(manifest))
        manifest_version = storage.put_bytes(manifest_key(archive_key), manifest)
    except BaseException:
        if committed:
            storage.delete(archive_key)
            if signer is not None:
                storage.delete(signature_key(archive_key))
        else:
            if archive is not None:
                archive.discard()
            sink.abort()
        raise
    if encrypted is not None:
        sha256, size = encrypted.sha256, encrypted.bytes_written
    collections = {
        e.name: {"items": e.items, "bytes": e.bytes, "raw_bytes": e.raw_bytes, "sha256": e.sha256}
        for e in archive.entries
    }
    return BackupResult(
        sum(e.items for e in archive.entries),
        size,
        sha256,
        collections,
        manifest,
        failed,
        getattr(writer, "version_id", None),
        manifest_version,
    )


class _Schema:
    """A source's database-wide schema members (PostgreSQL: pg_dump's dump and state). They
    lead the archive; with collections staging in parallel they are taken meanwhile, in a
    thread of their own, and written just before the first collection."""

    def __init__(
        self, session: BackupSession, names: list[str], archive: ArchiveWriter, overlap: bool
    ) -> None:
        self.archive = archive
        self.done = not session.has_schema
        self.pool: ThreadPoolExecutor | None = None
        self.future: Any = None
        if self.done:
            return
        take = lambda: session.schema_members(names, archive.codec)  # noqa: E731
        if overlap:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="schema")
            self.future = self.pool.submit(take)
        else:
            self.future = take

    def written(self) -> None:
        if self.done:
            return
        self.done = True
        members = self.future() if callable(self.future) else self.future.result()
        for member, data in members:
            self.archive.add_schema(member, data)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _stage_in_parallel(
    archive: ArchiveWriter,
    names: list[str],
    chunks: Callable[[str], Iterator[bytes]],
    definitions: dict[str, bytes | None],
    workers: int,
    abort: threading.Event,
    failed: dict[str, str],
    before_append: Callable[[], None] = lambda: None,
) -> None:
    with ThreadPoolExecutor(workers, thread_name_prefix="stage") as pool:
        futures = [pool.submit(archive.stage, n, chunks(n), definitions[n]) for n in names]
        try:
            for future in as_completed(futures):
                try:
                    staged = future.result()
                except CollectionFailed as e:
                    failed[e.name] = e.reason
                    continue
                before_append()
                archive.append(staged)
        except BaseException:
            abort.set()  # the other stagers stop at their next chunk
            for future in futures:
                future.cancel()
            wait(futures)
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().file.close()
            raise


def remove_archive(storage: Storage, archive_key: str) -> None:
    """Manifest first: without it, whatever remains is recognisably incomplete."""
    storage.delete(manifest_key(archive_key))
    storage.delete(archive_key)
    storage.delete(signature_key(archive_key))


class _Discard:
    """A restore session that writes nowhere: verify and dry runs read through it. It
    still checks that a PostgreSQL schema dump reads, with pg_restore too (a MemberSink,
    transfer/ports.py)."""

    def __init__(self, source_kind: str = "ndjson") -> None:
        self.source_kind = source_kind

    def begin(self, schema: dict[str, bytes]) -> None:
        if self.source_kind == "postgresql":
            from transfer.postgres import check_schema

            check_schema(schema)

    def prepare(self, collection: str, definition: bytes | None) -> None:
        pass

    @contextmanager
    def open_out(self, collection: str) -> Iterator[_Discard]:
        yield self

    def write(self, data: bytes) -> int:
        return len(data)


class _Mapped:
    """Gives the target session each collection's name in the target (a MemberSink over a
    RestoreSession, transfer/ports.py)."""

    def __init__(
        self, session: RestoreSession, mapping: dict[str, str], selection: list[str] | None = None
    ) -> None:
        self.session = session
        self.mapping = mapping
        self.selection = selection

    def begin(self, schema: dict[str, bytes]) -> None:
        """Targets that restore a whole schema plan it at once, renames and selection included."""
        self.session.begin(schema, self.selection, self.mapping)

    def prepare(self, collection: str, definition: bytes | None) -> None:
        self.session.prepare(collection, definition, self.mapping.get(collection))

    def open_out(self, collection: str) -> AbstractContextManager[Writable]:
        return self.session.open_out(collection)


class NotAuthentic(ArchiveError):
    """What storage holds is not what the event store recorded: replaced, swapped or
    forged. Refused before anything is written."""


def load_manifest(storage: Storage, archive_key: str, expected: Expected | None = None) -> dict[str, Any]:
    """No manifest: the archive is incomplete. A storage that cannot answer says so
    instead (the lookup raises), so a dead endpoint is never reported as a missing file.
    With `expected` (the snapshot's events), a manifest other than the one recorded at
    completion is refused: it holds every member's checksum, so it decides the rest."""
    try:
        data = storage.get_bytes(
            manifest_key(archive_key), expected.manifest_version_id if expected else None
        )
    except StorageError:
        if storage.exists(manifest_key(archive_key)):
            raise
        raise ArchiveError(f"archive {archive_key!r} has no manifest in {storage.name!r}") from None
    if expected is not None and expected.manifest_sha256:
        if hashlib.sha256(data).hexdigest() != expected.manifest_sha256:
            raise NotAuthentic(
                f"the manifest of {archive_key!r} in {storage.name!r} is not the one recorded when "
                "the snapshot completed: the archive was replaced or tampered with"
            )
    return parse_manifest(data)


def _encryption(
    storage: Storage,
    archive_key: str,
    manifest: dict[str, Any],
    keyring: Keyring | None,
    expected: Expected | None,
) -> dict[str, Any] | None:
    """Whether to decrypt comes from the events (or, for an old snapshot, from the
    location's configuration), never from the manifest alone."""
    claimed = manifest.get("encryption")
    if expected is not None and expected.encrypted is not None:
        if expected.encrypted and claimed is None:
            raise NotAuthentic(
                f"snapshot archive {archive_key!r} was written encrypted with key {expected.key_id!r}, "
                f"but what storage {storage.name!r} holds claims to be plaintext: it is a forgery or "
                "another archive"
            )
        if not expected.encrypted and claimed is not None:
            raise NotAuthentic(
                f"snapshot archive {archive_key!r} was written in plaintext, but is now encrypted"
            )
        if expected.encrypted and claimed is not None and claimed.get("key_id") != expected.key_id:
            raise NotAuthentic(
                f"snapshot archive {archive_key!r} was encrypted with key {expected.key_id!r}, "
                f"its manifest now names {claimed.get('key_id')!r}"
            )
    elif claimed is None and keyring is not None and keyring.key_id is not None:
        if expected is None or expected.trusted:
            return None  # an old snapshot of a location that encrypts since; only an import is refused
        raise NotAuthentic(
            f"storage location {storage.name!r} encrypts its archives, "
            f"and {archive_key!r} claims to be plaintext"
        )
    return claimed


class _Checked:
    """The stored object's bytes as read, hashed; the whole object is compared with the
    SHA-256 its completion recorded once the archive has been read to its end."""

    def __init__(self, raw: IO[bytes], archive_key: str, sha256: str | None) -> None:
        self.raw = raw
        self.archive_key = archive_key
        self.expected = sha256
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        if self.expected and self.sha.hexdigest() != self.expected:
            raise NotAuthentic(
                f"archive {self.archive_key!r} is not the object its snapshot recorded (SHA-256 differs): "
                "it was replaced or tampered with"
            )


@contextmanager
def open_archive(
    storage: Storage,
    archive_key: str,
    manifest: dict[str, Any],
    keyring: Keyring | None = None,
    expected: Expected | None = None,
) -> Iterator[IO[bytes]]:
    """The archive's tar stream, decrypted when the snapshot's events (or, for an old
    snapshot, the manifest) say it is encrypted; the caller calls `checked(stream)` once it
    read the archive, which compares the whole stored object with the recorded SHA-256.

    A missing key id fails before the download starts and a wrong key as soon as the
    header is read: either way before the caller opens a target."""
    encryption = _encryption(storage, archive_key, manifest, keyring, expected)
    if encryption is not None:
        require_key(keyring, storage.name, str(encryption.get("key_id")))
    with storage.open_reader(archive_key, expected.version_id if expected else None) as raw:
        hashed = _Checked(raw, archive_key, expected.sha256 if expected else None)
        if encryption is None:
            yield _Finishing(hashed, hashed)  # type: ignore[misc]
        else:
            assert keyring is not None
            context = expected.context if expected is not None else b""
            plain = DecryptingReader(
                cast("IO[bytes]", hashed),  # file enough: it is only read (raw's `with` closes it)
                keyring,
                expected_key_id=encryption.get("key_id"),
                context=context,
            )
            yield _Finishing(plain, hashed)  # type: ignore[misc]


class _Finishing:
    """A readable stream whose `finish()` drains and checks the stored object."""

    def __init__(self, stream: DecryptingReader | _Checked, checked: _Checked) -> None:
        self.stream = stream
        self.checked = checked

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        while self.stream.read(1 << 20):
            pass  # an encrypted stream authenticates its last segment here
        self.checked.finish()


def _read_through(
    stream: IO[bytes],
    manifest: dict[str, Any],
    wanted: set[str],
    session: MemberSink,
    report: Report,
    should_stop: ShouldStop,
) -> tuple[int, int, dict[str, int]]:
    """Streams the wanted members into the session, verifying as it goes."""
    total = sum(manifest["collections"][c]["bytes"] for c in wanted) or 1
    read = 0
    done_items = 0
    counts: dict[str, int] = {}

    def on_bytes(name: str, n: int, member_items: int) -> None:
        nonlocal read
        read += n
        if should_stop():
            raise Stopped
        report(done_items + member_items, read, min(99.0, 100.0 * read / total), name)

    for name, items in read_members(stream, manifest, wanted, session, on_bytes):
        done_items += items
        counts[name] = items
    finish = getattr(stream, "finish", None)
    if finish is not None:
        finish()  # the whole stored object against its recorded SHA-256, before any commit
    return done_items, read, counts


def _check(expected: dict[str, Any], found: dict[str, int], names: list[str]) -> dict[str, dict[str, Any]]:
    check = {}
    for name in names:
        check[name] = {"expected": expected[name]["items"], "found": found.get(name, 0)}
        check[name]["ok"] = check[name]["expected"] == check[name]["found"]
    bad = [n for n, c in check.items() if not c["ok"]]
    if bad:
        raise ConsistencyError(
            "item counts differ from the manifest in "
            + ", ".join(f"{n} ({check[n]['found']} != {check[n]['expected']})" for n in bad)
        )
    return check


def verify_archive(
    storage: Storage,
    archive_key: str,
    report: Report | None = None,
    should_stop: ShouldStop | None = None,
    keyring: Keyring | None = None,
    expected: Expected | None = None,
) -> RestoreResult:
    """Re-reads the whole archive: every member's SHA-256 and item count, and the manifest
    (an encrypted archive is also authenticated, segment by segment); with `expected`,
    the manifest and the whole stored object against what the snapshot's events recorded."""
    manifest = load_manifest(storage, archive_key, expected)
    wanted = set(manifest["collections"])
    with open_archive(storage, archive_key, manifest, keyring, expected) as stream:
        items, read, counts = _read_through(
            stream,
            manifest,
            wanted,
            _Discard(manifest.get("source_kind", "ndjson")),
            report or (lambda *a: None),
            should_stop or (lambda: False),
        )
    return RestoreResult(items, read, _check(manifest["collections"], counts, sorted(wanted)))


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
            items, read, counts = _read_through(stream, manifest, wanted, _Discard(kind), report, should_stop)
        check = _check(available, counts, names)
        for name in names:
            check[name].update(target_name=mapping.get(name, name), would_write=counts.get(name, 0))
        return RestoreResult(items, read, check)
    legacy = expected is not None and expected.manifest_sha256 is None and bool(expected.sha256)
    first = expected is not None and expected.verify_first
    if not target.transactional or legacy or first:
        # A target that cannot undo, or a snapshot from before the seal (only the object's
        # SHA-256 was recorded, known at the end): the whole archive is checked first.
        verify_archive(storage, archive_key, should_stop=should_stop, keyring=keyring, expected=expected)
    extras: dict[str, Any] = {}
    if kind == "postgresql" and target.kind == "postgresql":
        extras = dict(
            format_version=manifest.get("format_version", 1),
            keep_owners=keep_owners,
            should_stop=should_stop,
            on_plan=on_plan,
            resume=resume,
            run_id=run_id,
            sizes={c: int(v.get("raw_bytes", 0)) for c, v in available.items()},
        )
    try:
        with (
            open_archive(storage, archive_key, manifest, keyring, expected) as stream,
            target.open(kind, existing, **extras) as session,
        ):
            selection = sorted(wanted) if collections else None
            items, read, _ = _read_through(
                stream, manifest, wanted, _Mapped(session, mapping, selection), report, should_stop
            )
            # The consistency check reads the target itself, before anything becomes visible.
            check = _check(available, {n: session.count_items(n) for n in names}, names)
            for name in names:
                if name in mapping:
                    check[name]["target_name"] = mapping[name]
            before_commit()  # a fenced attempt raises here: it must not publish (or append) twice
            session.commit()
            notes = session.schema_notes()
    except AlreadyRestored as done:  # checked and committed by the attempt that died
        check = _check(available, {n: available[n]["items"] for n in names}, names)
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
