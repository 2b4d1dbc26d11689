"""NDJSON directories as source and restore target: one `<collection>.ndjson` per collection.

Lines move as bytes; items are counted by newlines, never by decoding documents.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHUNK = 1024 * 1024
SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
PARTIAL = ".snapledger-partial"


class SourceError(Exception):
    """The source cannot be read as configured."""


class NdjsonSource:
    kind = "ndjson"

    def __init__(self, name: str, directory: str | Path) -> None:
        self.name = name
        self.directory = Path(directory)

    def collections(self) -> dict[str, Path]:
        if not self.directory.is_dir():
            raise SourceError(f"source {self.name!r}: {self.directory} is not a directory")
        found: dict[str, Path] = {}
        for path in sorted(self.directory.iterdir()):
            for suffix in SUFFIXES:
                if path.name.endswith(suffix) and path.is_file():
                    collection = path.name[: -len(suffix)]
                    if collection in found:
                        raise SourceError(f"source {self.name!r}: collection {collection!r} has two files")
                    found[collection] = path
        return found

    def read_chunks(self, path: Path, on_raw_bytes: callable) -> Iterator[bytes]:  # type: ignore[valid-type]
        """Yields the collection's bytes, newline-terminated; reports file bytes consumed."""
        raw = open(path, "rb")  # noqa: SIM115 - closed below
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
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


class NdjsonTarget:
    """Writes each collection beside its final name and renames all at once on commit."""

    kind = "ndjson"

    def __init__(self, name: str, directory: str | Path) -> None:
        self.name = name
        self.directory = Path(directory)

    def path(self, collection: str) -> Path:
        return self.directory / f"{collection}.ndjson"

    def open_partial(self, collection: str) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        return open(self.directory / f"{collection}.ndjson{PARTIAL}", "wb")  # noqa: SIM115

    def commit(self, collections: list[str]) -> None:
        for c in collections:
            partial = self.directory / f"{c}.ndjson{PARTIAL}"
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, self.path(c))

    def abort(self, collections: list[str]) -> None:
        for c in collections:
            (self.directory / f"{c}.ndjson{PARTIAL}").unlink(missing_ok=True)

    def count_items(self, collection: str) -> int:
        """Counts newlines in what landed: the consistency check reads the target itself."""
        path = self.path(collection)
        if not path.exists():
            return 0
        n = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                n += chunk.count(b"\n")
        return n
