"""A local directory as a storage location: an archive is written under a partial name
and renamed into place on commit."""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from transfer.storage import layout
from transfer.storage.base import ArchiveWriter, Partial, Storage, StorageError, StoredObject


# ------------------------------------------------------------------------ local
class _LocalWriter(ArchiveWriter):
    def __init__(self, path: Path) -> None:
        self.path = path
        # A name of its own per writer: a re-claimed run never shares a file with the
        # attempt it replaced, even if that attempt is only frozen, not dead.
        self.partial = path.with_name(layout.local_partial(path.name, uuid.uuid4().hex[:12]))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.partial, "wb")  # noqa: SIM115 - closed in commit/abort
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.bytes_written += len(data)
        return len(data)

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError:
            self.abort()  # a full or read-only disk: nothing half-written stays behind
            raise
        self.file.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Removes the partial file even when closing it fails (a full disk refuses the
        buffered tail): the next run must find the location as it was."""
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self.partial.unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, name: str, root: str | Path) -> None:
        self.name = name
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes storage location {self.name!r}")
        return path

    def open_writer(self, key: str) -> ArchiveWriter:
        return _LocalWriter(self.path(key))

    def open_reader(self, key: str, version_id: str | None = None) -> IO[bytes]:
        try:
            return open(self.path(key), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise StorageError(f"object {key!r} is missing from {self.name!r}") from None

    def put_bytes(self, key: str, data: bytes) -> str | None:
        writer = self.open_writer(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return None

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        self.cleanup_partials(key)

    def cleanup_partials(self, key: str) -> int:
        path = self.path(key)
        if not path.parent.is_dir():
            return 0
        partials = list(path.parent.glob(layout.local_partial(glob.escape(path.name), "*")))
        for partial in partials:
            partial.unlink(missing_ok=True)
        return len(partials)

    def list_partials(self) -> list[Partial]:
        found = []
        for path in self.root.rglob(layout.local_partial("*", "*")) if self.root.is_dir() else ():
            try:
                started = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue  # committed or aborted while we looked
            key = layout.local_partial_of(path.relative_to(self.root).as_posix())
            if key is None:
                continue
            found.append(Partial(key, str(path), started))
        return found

    def remove_partial(self, partial: Partial) -> None:
        path = Path(partial.ref)
        if self.root in path.parents and layout.local_partial_of(path.name) is not None:
            path.unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local directory {self.root}"

    def list_objects(self) -> Iterator[StoredObject]:
        """Unfinished writes (`.partial-*`) are not objects yet, so they are not listed."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and layout.local_partial_of(path.name) is None:
                yield StoredObject(path.relative_to(self.root).as_posix(), path.stat().st_size)
