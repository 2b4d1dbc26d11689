"""The storage interface every location implements, and what it hands back.

Writers are all-or-nothing: a reader never sees half an archive under its final key."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO


class StorageError(Exception):
    """The object store refused or failed an operation (message carries no credentials)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True)
class Partial:
    """An unfinished write: a local `.partial-*` file or an open S3 multipart upload."""

    key: str  # the key it was writing, relative to the location
    ref: str  # what removes it: the file's path, or the upload id
    started: datetime


class ArchiveWriter(ABC):
    """A write-only byte sink that becomes visible only on commit()."""

    bytes_written = 0
    version_id: str | None = None  # of the committed object, where the location versions them

    @abstractmethod
    def write(self, data: bytes) -> int: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class Storage(ABC):
    name: str
    lock_mode: str | None = None  # S3 Object Lock: "compliance" or "governance"
    lock_days: int = 30

    def lock(self, key: str, until: datetime) -> None:
        raise StorageError(f"storage location {self.name!r} cannot lock objects")

    def check_lock(self) -> None:
        raise StorageError(f"storage location {self.name!r} cannot lock objects")

    @abstractmethod
    def open_writer(self, key: str) -> ArchiveWriter: ...

    @abstractmethod
    def open_reader(self, key: str, version_id: str | None = None) -> IO[bytes]:
        """`version_id`: on a versioned S3 bucket, the version recorded when it was written
        (an overwrite since is not what is read); elsewhere ignored."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str | None:
        """Answers the object's version id on a versioned S3 bucket, else None."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deleting a missing key is not an error: deletes are retried after crashes."""

    @abstractmethod
    def cleanup_partials(self, key: str) -> int:
        """Removes unfinished writes of `key` left by a dead attempt; answers how many."""

    @abstractmethod
    def describe(self) -> str:
        """Where objects go, for logs and the API (no credentials)."""

    @abstractmethod
    def list_objects(self) -> Iterator[StoredObject]:
        """Every complete object of the location, keys relative to it, sorted by key."""

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        with self.open_reader(key, version_id) as f:
            return f.read()

    def list_partials(self) -> list[Partial]:
        """Every unfinished write of the location, for the janitor's orphan sweep."""
        return []

    def remove_partial(self, partial: Partial) -> None:
        """Removes one unfinished write; one already gone is not an error."""
        raise NotImplementedError  # list_partials() above names none
