"""What a restore drill checks: every collection of the restored copy, row for row, against
the archive it came from.

Each side is reduced to a digest of its rows: their count, and the sum of their SHA-256
modulo 2^256, which does not depend on their order (a table is read back in any order). A row
is what the backup wrote: a line of COPY text (PostgreSQL), a BSON document (MongoDB), a
line (NDJSON). The archive's side is read through every check a restore makes (checksums,
authentication), so the copy is compared with what the snapshot's events recorded.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transfer.archive.crypto import Keyring
from transfer.runs.contract import ConsistencyError, Expected
from transfer.runs.reading import Discard, load_manifest, open_archive, read_through
from transfer.storage import Storage

MODULUS = 1 << 256


@dataclass
class RowDigest:
    count: int = 0
    total: int = 0

    def add(self, row: bytes | memoryview) -> None:
        self.count += 1
        self.total = (self.total + int.from_bytes(hashlib.sha256(row).digest(), "big")) % MODULUS

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.count, "digest": f"{self.total:064x}"}


@dataclass
class RowSplitter:
    """Cuts a stream of the source kind's rows, in chunks of any size, into rows."""

    kind: str
    digest: RowDigest = field(default_factory=RowDigest)
    buffer: bytearray = field(default_factory=bytearray)

    def write(self, data: bytes) -> int:
        self.buffer += data
        if self.kind == "mongodb":
            start = 0
            while len(self.buffer) - start >= 4:
                (size,) = struct.unpack_from("<i", self.buffer, start)
                if size < 5 or len(self.buffer) - start < size:
                    break
                self.digest.add(bytes(self.buffer[start : start + size]))
                start += size
            del self.buffer[:start]
        else:  # a COPY text row or an NDJSON line never holds a raw newline
            *rows, rest = bytes(self.buffer).split(b"\n")
            for row in rows:
                self.digest.add(row)
            self.buffer = bytearray(rest)
        return len(data)

    def close(self) -> None:
        if self.buffer and self.kind != "mongodb":
            self.digest.add(bytes(self.buffer))  # a last line without its newline
            self.buffer.clear()
        if self.buffer:
            raise ConsistencyError(f"{len(self.buffer)} bytes after the last whole document")


class _Digests(Discard):
    """A restore session that writes nowhere and digests every collection's rows."""

    def __init__(self, source_kind: str) -> None:
        super().__init__(source_kind)
        self.found: dict[str, RowSplitter] = {}

    @contextmanager
    def open_out(self, collection: str) -> Iterator[RowSplitter]:  # type: ignore[override]
        splitter = self.found[collection] = RowSplitter(self.source_kind)
        yield splitter
        splitter.close()


def archive_digests(
    storage: Storage, archive_key: str, keyring: Keyring | None, expected: Expected | None
) -> dict[str, RowDigest]:
    """Every collection's rows as the archive holds them, read through a restore's checks."""
    manifest = load_manifest(storage, archive_key, expected)
    wanted = set(manifest["collections"])
    sink = _Digests(manifest.get("source_kind", "ndjson"))
    with open_archive(storage, archive_key, manifest, keyring, expected) as stream:
        read_through(stream, manifest, wanted, sink, lambda *a: None, lambda: False)
    return {name: sink.found[name].digest if name in sink.found else RowDigest() for name in wanted}


def digest_chunks(kind: str, chunks: Iterable[bytes | bytearray | memoryview]) -> RowDigest:
    splitter = RowSplitter(kind)
    for chunk in chunks:
        splitter.write(bytes(chunk))
    splitter.close()
    return splitter.digest


def postgres_digests(url: str, password: str | None, collections: list[str]) -> dict[str, RowDigest]:
    """Each restored table read back as the backup read it: `COPY ... TO STDOUT`."""
    import psycopg
    from psycopg import sql

    from transfer.sources.postgres.connection import conninfo

    out = {}
    with psycopg.connect(conninfo(url, password), autocommit=True, connect_timeout=10) as conn:
        for name in collections:
            schema, _, table = name.partition(".")
            with conn.cursor() as cur:
                query = sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(schema, table))
                with cur.copy(query) as copy:
                    out[name] = digest_chunks("postgresql", copy)
    return out


def mongodb_digests(client: Any, placed: dict[str, str]) -> dict[str, RowDigest]:
    """Each restored collection's documents, as raw BSON (`placed`: archived name -> where)."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    from transfer.sources.mongodb.connection import as_bytes, split_name

    raw: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
    out = {}
    for name, where in placed.items():
        db, coll = split_name(where)
        digest = RowDigest()
        for doc in client.get_database(db).get_collection(coll, codec_options=raw).find({}):
            digest.add(as_bytes(doc))
        out[name] = digest
    return out


def ndjson_digests(directory: Path, files: dict[str, Path]) -> dict[str, RowDigest]:
    out = {}
    for name, path in files.items():
        with open(path, "rb") as f:
            out[name] = digest_chunks("ndjson", iter(lambda: f.read(1 << 20), b""))
    return out


def compare(archived: dict[str, RowDigest], restored: dict[str, RowDigest]) -> dict[str, dict[str, Any]]:
    """Per collection, the rows and digest on both sides; any difference is refused, named."""
    result, bad = {}, []
    for name in sorted(archived):
        want, got = archived[name], restored.get(name, RowDigest())
        ok = want == got
        result[name] = {**want.as_dict(), "restored_rows": got.count, "ok": ok}
        if not ok:
            bad.append(
                f"{name} ({got.count} rows, {want.count} archived)" if got.count != want.count else name
            )
    if bad:
        raise ConsistencyError("the restored copy differs from the archive in " + ", ".join(bad))
    return result
