"""The archive format: one tar per snapshot, gzip members, a manifest written last.

Layout (readable with tar + gunzip, no snapledger needed):
    schema/...                    database-wide schema members first (PostgreSQL: pg_dump's
                                  schema-only dump and what a restore needs besides it)
    data/<collection>.ndjson.gz   one per collection, in manifest order; the collection name
                                  is percent-escaped, so no name becomes a path of its own
    manifest.json                 last member; the same bytes are also stored beside the
                                  archive as `<archive>.manifest.json`, the commit marker
MongoDB snapshots use mongodump's directory layout instead, so that after `tar -xf` the
command `mongorestore --gzip --dir dump` restores them:
    dump/<db>/<collection>.metadata.json.gz   options and indexes (gzipped, as --gzip expects)
    dump/<db>/<collection>.bson.gz            concatenated BSON documents
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

from transfer.archive.codec import ERRORS, SUFFIX, compressor, inflate
from transfer.archive.items import counter_for
from transfer.ports import MemberSink

FORMAT = "snapledger-archive"
FORMAT_VERSION = 3  # 2: schema members with their checksums; 3: MongoDB changes to replay (oplog)
PLAIN_FORMAT_VERSION = 2  # what an archive without changes to replay is written as, for older readers
OPLOG_MEMBER = "dump/oplog.bson.gz"  # mongodump --oplog puts the changes made during the dump here
MANIFEST = "manifest.json"
_DAMAGED: tuple[type[Exception], ...] = (*ERRORS, ValueError)  # ValueError: a broken BSON length prefix
CHUNK = 1024 * 1024


class ArchiveError(Exception):
    """The archive is missing, incomplete or does not match its manifest."""


DATA_SUFFIX = {"ndjson": ".ndjson.gz", "postgresql": ".copy.gz", "mongodb": ".bson.gz"}
MONGODB_METADATA_SUFFIX = ".metadata.json.gz"
_PATH_SEGMENT_SAFE = "$&+:=@"  # besides letters, digits and -._~, as Go's url.PathEscape


def _mongodump_path(collection: str) -> str:
    """`<db>.<collection>` as mongodump names it: dump/<db>/<collection>, the collection name
    escaped like Go's url.PathEscape, which mongorestore undoes."""
    db, _, coll = collection.partition(".")
    db_part = quote(db, safe=_PATH_SEGMENT_SAFE)
    db_part = db_part.replace(".", "%2E") if db_part in (".", "..") else db_part
    return f"dump/{db_part}/{quote(coll, safe=_PATH_SEGMENT_SAFE)}"


def escape(name: str) -> str:
    """Reversible (urllib.parse.unquote) and free of "/", NUL and control characters: a
    name stays one path segment, and "." or ".." cannot name a directory."""
    escaped = quote(name, safe="")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


def check_member_name(name: str) -> None:
    """A manifest read back (perhaps crafted) may only name members inside the archive's
    own tree: `tar -xf` of a name with ".." or a leading "/" writes elsewhere."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise ArchiveError(f"archive names an unsafe member {name!r}")


def member_name(collection: str, source_kind: str = "ndjson", codec: str = "gzip") -> str:
    if source_kind == "mongodb":
        return _mongodump_path(collection) + DATA_SUFFIX[source_kind]
    return f"data/{escape(collection)}{DATA_SUFFIX[source_kind].removesuffix('.gz')}{SUFFIX[codec]}"


def schema_member_name(collection: str, source_kind: str = "ndjson") -> str:
    """Where a collection's definition goes; names ending in .gz are stored gzipped."""
    if source_kind == "mongodb":
        return _mongodump_path(collection) + MONGODB_METADATA_SUFFIX
    return f"schema/{escape(collection)}.sql"


class _Hashing:
    """A write-through file wrapper that hashes and counts what passes."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        pass


@dataclass
class CollectionEntry:
    name: str
    member: str
    schema_member: str | None = None
    schema_sha256: str | None = None
    items: int = 0
    raw_bytes: int = 0
    bytes: int = 0
    sha256: str = ""

    def as_manifest(self) -> dict[str, Any]:
        entry = {
            "member": self.member,
            "items": self.items,
            "raw_bytes": self.raw_bytes,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }
        if self.schema_member:
            entry["schema_member"] = self.schema_member
            entry["schema_sha256"] = self.schema_sha256
        return entry


@dataclass
class Staged:
    entry: CollectionEntry
    file: Any  # a temporary file holding the compressed member
    definition: bytes | None


@dataclass
class ArchiveWriter:
    """Streams collections into a tar on `sink`. Each member is first staged, compressed,
    in a temp file because tar needs its size up front (disk, not memory, absorbs the
    collection); staging is thread-safe, so collections can compress in parallel while
    append() keeps the tar itself single-writer."""

    sink: Any
    source_kind: str = "ndjson"
    codec: str = "gzip"
    level: int = 6
    entries: list[CollectionEntry] = field(default_factory=list)
    changes: CollectionEntry | None = None  # the oplog member, where the source has one
    schema: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source_kind == "mongodb":
            self.codec = "gzip"  # mongorestore --gzip reads nothing else
        self._out = _Hashing(self.sink)
        self._appended = False
        self._tar = tarfile.open(fileobj=self._out, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]

    def add_schema(self, name: str, data: bytes) -> None:
        """A database-wide schema member; all of them come before the first collection, so
        a restore has checked the whole schema before it writes anything. MongoDB's (a
        view's definition, named "<db>.<view>", and a database's users and roles) go where
        mongodump puts them, gzipped."""
        if self._appended:
            raise ArchiveError("schema members must precede the collections")
        if self.source_kind == "mongodb":
            # Users and roles ("<db>.$admin.system.users") are BSON, as mongodump writes them.
            auth = name.partition(".")[2].startswith("$admin.system.")
            member = member_name(name, "mongodb") if auth else schema_member_name(name, "mongodb")
            data = gzip.compress(data, compresslevel=self.level, mtime=0)
        else:
            member = f"schema/{escape(name)}"
        self._tar.addfile(self._info(member, len(data)), io.BytesIO(data))
        self.schema[name] = {"member": member, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def stage(self, name: str, chunks: Iterable[bytes], definition: bytes | None = None) -> Staged:
        entry = CollectionEntry(name, member_name(name, self.source_kind, self.codec))
        counter = counter_for(self.source_kind)
        self.entries.append(entry)  # counted while it streams, for progress
        if definition is not None:
            entry.schema_member = schema_member_name(name, self.source_kind)
            if entry.schema_member.endswith(".gz"):
                definition = gzip.compress(definition, compresslevel=self.level, mtime=0)
            entry.schema_sha256 = hashlib.sha256(definition).hexdigest()
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by append() or discard()
        try:
            hashed = _Hashing(tmp)
            compress = compressor(self.codec, self.level)
            for chunk in chunks:
                entry.items += counter.feed(chunk)
                entry.raw_bytes += len(chunk)
                hashed.write(compress.compress(chunk))
                entry.bytes = hashed.size  # compressed so far: what progress reports as transferred
            hashed.write(compress.flush())
        except BaseException:
            tmp.close()
            self.entries.remove(entry)  # a collection left out must not reach the manifest
            raise
        entry.bytes, entry.sha256 = hashed.size, hashed.sha.hexdigest()
        return Staged(entry, tmp, definition)

    def append(self, staged: Staged) -> CollectionEntry:
        entry = staged.entry
        self._appended = True
        with staged.file as tmp:
            if staged.definition is not None:
                assert entry.schema_member is not None
                self._tar.addfile(
                    self._info(entry.schema_member, len(staged.definition)), io.BytesIO(staged.definition)
                )
            tmp.seek(0)
            self._tar.addfile(self._info(entry.member, entry.bytes), tmp)
        return entry

    def add_collection(
        self, name: str, chunks: Iterable[bytes], definition: bytes | None = None
    ) -> CollectionEntry:
        return self.append(self.stage(name, chunks, definition))

    def add_changes(self, chunks: Iterable[bytes]) -> CollectionEntry:
        """What the source changed while its collections were read (MongoDB: oplog entries,
        raw BSON), after the last collection, as mongodump --oplog writes it; a restore
        replays it once the collections are in."""
        staged = self.stage("oplog", chunks)
        staged.entry.member = OPLOG_MEMBER
        self.entries.remove(staged.entry)  # not a collection: it restores into none
        self.changes = self.append(staged)
        return self.changes

    @property
    def items(self) -> int:
        return sum(e.items for e in self.entries)

    @property
    def bytes_so_far(self) -> int:
        """Compressed bytes produced, staged or already in the tar (the final size adds
        only tar headers and the manifest)."""
        return sum(e.bytes for e in self.entries)

    @staticmethod
    def _info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = int(time.time())
        info.mode = 0o644
        return info

    def discard(self) -> None:
        """Drops an unfinished archive: the tar stream must not flush into an aborted sink."""
        stream = self._tar.fileobj
        if stream is not None and hasattr(stream, "closed"):
            stream.closed = True  # tarfile's _Stream would otherwise write its tail on __del__
        self._tar.closed = True

    def finish(self, header: dict[str, Any]) -> tuple[bytes, str, int]:
        """Writes the manifest as the last member; answers (manifest, sha256, size)."""
        manifest = dict(header)
        manifest.update(
            format=FORMAT,
            format_version=FORMAT_VERSION if self.changes is not None else PLAIN_FORMAT_VERSION,
            compression=self.codec,
            collections={e.name: e.as_manifest() for e in self.entries},
            items=sum(e.items for e in self.entries),
        )
        if self.schema:
            manifest["schema"] = self.schema
        if self.changes is not None:
            manifest["oplog"] = self.changes.as_manifest()
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        self._tar.addfile(self._info(MANIFEST, len(data)), io.BytesIO(data))
        self._tar.close()
        return data, self._out.sha.hexdigest(), self._out.size


def parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ArchiveError("manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError("manifest is not a snapledger archive manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ArchiveError(f"archive format {manifest['format_version']} is newer than this snapledger")
    return manifest


def read_members(
    stream: IO[bytes],
    manifest: dict[str, Any],
    wanted: set[str],
    session: MemberSink,
    on_bytes: Callable[[str, int, int], None],
) -> Iterator[tuple[str, int]]:
    """Streams the wanted collections out of the archive, decompressed, into the restore
    session: begin(schema) once, before the first collection (a no-op where the target has
    no schema), then prepare(name, definition) and the bytes into open_out(name) per
    collection.

    Verifies every member's SHA-256 and item count against the manifest as it goes, and
    the embedded manifest against the one given; schema members are all checked before
    begin(), so a damaged schema stops the restore before anything is written. Yields
    (collection, items) per member.
    """
    expected = manifest["collections"]
    schema_expected: dict[str, dict[str, Any]] = manifest.get("schema", {})
    for entry in [*expected.values(), *schema_expected.values()]:
        for key in ("member", "schema_member"):
            if entry.get(key) is not None:
                check_member_name(str(entry[key]))
    seen_manifest = False
    by_member = {v["member"]: k for k, v in expected.items()}
    by_schema = {v["schema_member"]: k for k, v in expected.items() if v.get("schema_member")}
    by_db_schema = {v["member"]: k for k, v in schema_expected.items()}
    definitions: dict[str, bytes] = {}
    schema: dict[str, bytes] = {}
    oplog: dict[str, Any] | None = manifest.get("oplog")
    if oplog is not None:
        if manifest.get("source_kind") != "mongodb":  # before anything is written
            raise ArchiveError("archive carries an oplog to replay, which only MongoDB snapshots have")
        check_member_name(str(oplog["member"]))
    begun = False

    def begin() -> None:
        nonlocal begun
        missing = sorted(set(schema_expected) - set(schema))
        if missing:
            raise ArchiveError(f"schema member {missing[0]!r} is missing or out of place")
        begun = True
        session.begin(schema)

    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as e:
        raise ArchiveError(f"archive is not a readable tar: {e}") from None
    with tar:
        for member in tar:
            if member.name == MANIFEST:
                embedded = tar.extractfile(member)
                found = parse_manifest(embedded.read()) if embedded is not None else {}
                if found.get("collections") != expected or found.get("schema", {}) != schema_expected:
                    raise ArchiveError("embedded manifest differs from the stored manifest")
                seen_manifest = True
                continue
            if member.name in by_db_schema:
                key = by_db_schema[member.name]
                if begun or key in schema:
                    raise ArchiveError(f"schema member {key!r} is out of place")
                data = _checked(tar, member, schema_expected[key]["sha256"], f"schema member {key!r}")
                if member.name.endswith(".gz"):
                    data = _inflate_small(data, f"schema member {key!r}")
                schema[key] = data
                continue
            if member.name in by_schema:
                name = by_schema[member.name]
                definition = _checked(
                    tar, member, expected[name].get("schema_sha256"), f"definition of {name!r}"
                )
                if member.name.endswith(".gz"):
                    definition = _inflate_small(definition, f"definition of {name!r}")
                definitions[name] = definition
                continue
            if not begun:
                begin()
            if oplog is not None and member.name == oplog["member"]:
                with session.open_changes() as out:
                    _stream_member(tar, member, oplog, "the oplog", manifest, out, lambda n, i: None)
                continue
            name = by_member.get(member.name)
            if name is None:
                raise ArchiveError(f"archive has an unexpected member {member.name!r}")
            if name not in wanted:
                continue
            session.prepare(name, definitions.get(name))
            with session.open_out(name) as out:
                items = _stream_member(
                    tar,
                    member,
                    expected[name],
                    f"collection {name!r}",
                    manifest,
                    out,
                    lambda n, i, name=name: on_bytes(name, n, i),  # type: ignore[misc]
                )
            yield name, items
    if not seen_manifest:
        raise ArchiveError("archive ends without its manifest: it is incomplete")
    if not begun:
        begin()


def _stream_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entry: dict[str, Any],
    what: str,
    manifest: dict[str, Any],
    out: Any,
    on_bytes: Callable[[int, int], None],
) -> int:
    """One data member, decompressed into `out`, checked against its manifest entry (size
    bound, SHA-256, item count) as it streams; answers its items."""
    src = tar.extractfile(member)
    assert src is not None
    sha = hashlib.sha256()
    codec = manifest.get("compression", "gzip")
    counter = counter_for(manifest.get("source_kind", "ndjson"))
    items = 0
    limit = entry.get("raw_bytes")
    produced, taken, told = 0, 0, 0

    def read(n: int) -> bytes:
        nonlocal taken
        chunk = src.read(n)
        sha.update(chunk)
        taken += len(chunk)
        return chunk

    try:
        for data in inflate(read, codec, CHUNK):
            produced += len(data)
            if limit is not None and produced > limit:
                raise ArchiveError(
                    f"{what} inflates past the {limit} bytes its manifest gives: "
                    "it is damaged (or built to exhaust memory)"
                )
            items += counter.feed(data)
            out.write(data)
            on_bytes(taken - told, items)
            told = taken
    except _DAMAGED as e:
        raise ArchiveError(f"{what} is damaged: {e}") from None
    on_bytes(taken - told, items)
    if sha.hexdigest() != entry["sha256"]:
        raise ArchiveError(f"checksum mismatch in {what}")
    if items != entry["items"]:
        raise ArchiveError(f"{what} has {items} items, manifest says {entry['items']}")
    return items


MAX_SCHEMA_MEMBER = 1 << 30
MAX_DEFINITION = 64 << 20  # a collection's options and indexes: kilobytes, never this


def _inflate_small(data: bytes, what: str) -> bytes:
    out = bytearray()
    try:
        for piece in inflate(io.BytesIO(data).read, "gzip", CHUNK):
            out += piece
            if len(out) > MAX_DEFINITION:
                raise ArchiveError(f"{what} inflates past {MAX_DEFINITION} bytes: it is damaged")
    except ERRORS as e:
        raise ArchiveError(f"{what} is damaged: {e}") from None
    return bytes(out)


def _checked(tar: tarfile.TarFile, member: tarfile.TarInfo, sha256: str | None, what: str) -> bytes:
    """A small member read whole and compared with its checksum (older archives had none
    for per-collection definitions: those are read as they are)."""
    if member.size > MAX_SCHEMA_MEMBER:
        raise ArchiveError(f"{what} is {member.size} bytes, more than a schema member may be")
    src = tar.extractfile(member)
    if src is None:
        raise ArchiveError(f"{what} is not a file")
    data = src.read()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArchiveError(f"checksum mismatch in {what}")
    return data
