"""Opening a stored archive so that nothing read back is believed unchecked: the manifest
against its recorded SHA-256 and signature, the archive against its SHA-256 (and S3
version), decryption decided by the events, never by the archive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, Any, cast

from transfer.archive.crypto import DecryptingReader, Keyring, require_key
from transfer.archive.format import ArchiveError, parse_manifest, read_members
from transfer.errors import Stopped
from transfer.ports import MemberSink, RestoreSession, Writable
from transfer.runs.contract import ConsistencyError, Expected, Report, ShouldStop
from transfer.storage import Storage, StorageError
from transfer.storage.layout import manifest_key


class Discard:
    """A restore session that writes nowhere: verify and dry runs read through it. It
    still checks that a PostgreSQL schema dump reads, with pg_restore too (a MemberSink,
    transfer/ports.py)."""

    def __init__(self, source_kind: str = "ndjson") -> None:
        self.source_kind = source_kind

    def begin(self, schema: dict[str, bytes]) -> None:
        if self.source_kind == "postgresql":
            from transfer.sources.postgres.members import check_schema

            check_schema(schema)

    def prepare(self, collection: str, definition: bytes | None) -> None:
        pass

    @contextmanager
    def open_out(self, collection: str) -> Iterator[Discard]:
        yield self

    @contextmanager
    def open_changes(self) -> Iterator[Discard]:
        yield self  # verified and counted by the reader, replayed nowhere

    def write(self, data: bytes) -> int:
        return len(data)


class Mapped:
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

    def open_changes(self) -> AbstractContextManager[Writable]:
        return self.session.open_changes()


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
) -> Iterator[CheckedStream]:
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
            yield CheckedStream(hashed, hashed)
        else:
            assert keyring is not None
            context = expected.context if expected is not None else b""
            plain = DecryptingReader(
                cast("IO[bytes]", hashed),  # file enough: it is only read (raw's `with` closes it)
                keyring,
                expected_key_id=encryption.get("key_id"),
                context=context,
            )
            yield CheckedStream(plain, hashed)


class CheckedStream:
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


def read_through(
    stream: CheckedStream,
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

    members = read_members(
        cast("IO[bytes]", stream), manifest, wanted, session, on_bytes
    )  # tarfile only reads
    for name, items in members:
        done_items += items
        counts[name] = items
    stream.finish()  # the whole stored object against its recorded SHA-256, before any commit
    return done_items, read, counts


def check_counts(
    expected: dict[str, Any], found: dict[str, int], names: list[str]
) -> dict[str, dict[str, Any]]:
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
