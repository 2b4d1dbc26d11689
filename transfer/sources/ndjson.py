"""NDJSON directories as source and restore target: one `<collection>.ndjson` per collection.

Lines move as bytes; items are counted by newlines, never by decoding documents.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from transfer.archive.format import escape
from transfer.errors import SourceError, TargetError, no_changes_to_replay
from transfer.ports import PointInTime
from transfer.storage.base import Partial

CHUNK = 1024 * 1024
SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
PARTIAL = ".snapledger-partial"
EXISTING = ("fail", "replace", "append")  # what a restore does with a file already there


def readable(name: str) -> str:
    """A file name as a collection name that is always text: the bytes that are not UTF-8
    (they reach Python as lone surrogates) become %XX, so the name can be stored, shown
    and restored, and the file it came from is still the one read."""
    if not any("\ud800" <= ch <= "\udfff" for ch in name):
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: one undecodable byte
            out.append(f"%{code - 0xDC00:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"%u{code:04X}")
        else:
            out.append(ch)
    return "".join(out)


class NdjsonSource:
    """A directory is its own backup session (see transfer/ports.py: Source, BackupSession)."""

    kind = "ndjson"
    parallel_safe = True  # files are read independently
    isolated_collections = True  # one damaged file does not spoil the others
    has_schema = False  # no database-wide schema members
    parallel = 2

    def __init__(self, name: str, directory: str | Path) -> None:
        self.name = name
        self.directory = Path(directory)

    def collections(self) -> dict[str, Path]:
        if not self.directory.is_dir():
            # The reason becomes an event and an API field: name the source, not server paths.
            raise SourceError(f"source {self.name!r}: its configured directory is missing or not a directory")
        found: dict[str, Path] = {}
        for path in sorted(self.directory.iterdir()):
            for suffix in SUFFIXES:
                if path.name.endswith(suffix) and path.is_file():
                    collection = readable(path.name[: -len(suffix)])
                    if collection in found:
                        raise SourceError(f"source {self.name!r}: collection {collection!r} has two files")
                    found[collection] = path
        return found

    @contextmanager
    def open(self) -> Iterator[NdjsonSource]:
        """A directory needs no session; PostgreSQL's opens one consistent transaction."""
        self._paths = self.collections()
        yield self

    def estimates(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self._paths.items()}

    def definition(self, collection: str) -> bytes | None:
        return None

    def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
        return []  # never called: has_schema is False

    def point_in_time(self) -> PointInTime:
        return PointInTime(False, "files are read one after another, each as it is when read")

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """Yields the collection's bytes, newline-terminated; reports file bytes consumed."""
        path = self._paths[collection]
        raw = open(path, "rb")  # noqa: SIM115 - closed below
        stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        last = b"\n"
        consumed = 0
        try:
            while chunk := stream.read(CHUNK):
                last = chunk[-1:]
                now = raw.tell()
                on_raw_bytes(now - consumed)
                consumed = now
                yield chunk
            if last != b"\n":
                yield b"\n"
        finally:
            stream.close()
            raw.close()


MAX_FILE_NAME = 255  # bytes: what Linux and most file systems allow


class NdjsonTarget:
    """Writes each collection beside its final name and publishes all at once on commit."""

    kind = "ndjson"
    transactional = True  # nothing is visible before commit publishes the files

    def __init__(self, name: str, directory: str | Path, existing: str = "replace") -> None:
        self.name = name
        self.directory = Path(directory)
        self.existing = existing

    def path(self, collection: str) -> Path:
        return self._inside(f"{escape(collection)}.ndjson")

    def partial(self, collection: str, attempt: str) -> Path:
        """Each restore session writes under names of its own: a frozen attempt that wakes
        can never touch (or delete) the files of the attempt that replaced it."""
        return self._inside(f"{escape(collection)}.ndjson{PARTIAL}-{attempt}")

    def _inside(self, file_name: str) -> Path:
        """A collection name read from an archive (perhaps crafted) never leaves the target:
        it is escaped to one file name, and the resolved path is checked besides."""
        if len(file_name.encode()) > MAX_FILE_NAME:
            raise TargetError(
                f"collection name {file_name[:40]!r}... is too long for a file name in {self.name!r}"
            )
        root = self.directory.resolve()
        path = (root / file_name).resolve()
        if path.parent != root:
            raise TargetError(f"collection {file_name!r} would be written outside target {self.name!r}")
        return path

    @contextmanager
    def open(self, source_kind: str, existing: str | None = None, **_: Any) -> Iterator[_NdjsonRestore]:
        if source_kind != "ndjson":
            raise TargetError(f"target {self.name!r} takes NDJSON snapshots, not {source_kind}")
        session = _NdjsonRestore(self, existing or self.existing)
        try:
            yield session
        finally:
            for name in session.names.values():
                self.partial(name, session.attempt).unlink(missing_ok=True)

    def count_items(self, collection: str) -> int:
        return _count_lines(self.path(collection))

    def cleanup_partials(self) -> int:
        """Before a re-claimed restore starts: what its dead attempts left (one restore per
        target runs at a time, so every partial file here is theirs)."""
        removed = 0
        if self.directory.is_dir():
            for path in self.directory.glob("*" + PARTIAL + "*"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def list_partials(self) -> list[Partial]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob("*" + PARTIAL + "*"):
            try:
                started = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue  # published or removed while listing
            found.append(Partial(key=path.name, ref=str(path), started=started))
        return found

    def remove_partial(self, partial: Partial) -> bool:
        path = Path(partial.ref)
        if path.parent != self.directory or PARTIAL not in path.name:
            raise TargetError(f"{partial.ref!r} is not an unfinished write of target {self.name!r}")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            n += chunk.count(b"\n")
    return n


class _NdjsonRestore:
    """existing: replace (swap the file atomically), fail (refuse a non-empty file),
    append (add the lines after what is there, on commit)."""

    def __init__(self, target: NdjsonTarget, existing: str) -> None:
        self.target = target
        self.existing = existing
        self.names: dict[str, str] = {}
        self.attempt = uuid.uuid4().hex[:12]

    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        pass  # files have no schema to plan

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        name = as_name or collection
        final = self.target.path(name)
        if self.existing == "fail" and final.exists() and final.stat().st_size > 0:
            raise TargetError(
                f"{final.name} in target {self.target.name!r} is not empty "
                "(choose existing = replace or append)"
            )
        self.names[collection] = name

    def open_out(self, collection: str) -> IO[bytes]:
        self.target.directory.mkdir(parents=True, exist_ok=True)
        return open(self.target.partial(self.names[collection], self.attempt), "wb")  # noqa: SIM115

    def open_changes(self) -> NoReturn:
        no_changes_to_replay()

    def count_items(self, collection: str) -> int:
        """Counts newlines in what was written: the check reads the target itself."""
        if collection not in self.names:
            return 0
        return _count_lines(self.target.partial(self.names[collection], self.attempt))

    def commit(self) -> None:
        for name in self.names.values():
            partial, final = self.target.partial(name, self.attempt), self.target.path(name)
            if self.existing == "append" and final.exists():
                with open(final, "ab") as out, open(partial, "rb") as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                partial.unlink()
                continue
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, final)

    def schema_notes(self) -> dict[str, Any] | None:
        return None  # nothing beyond the counts to report
