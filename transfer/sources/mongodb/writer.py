"""Documents into a collection: a BSON stream cut at each document's length prefix and
inserted in batches, by one ordered inserter or several unordered ones.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError

from transfer.archive.format import ArchiveError
from transfer.sources.mongodb.connection import (
    BATCH_BYTES,
    BATCH_DOCS,
    MAX_DOCUMENT,
)

DOCUMENT_VALIDATION_FAILURE = 121  # the server's code for a document its validator refused


class BsonWriter:
    """Cuts a BSON stream into documents by their little-endian length prefix, carrying a
    partial document across writes, and inserts them in batches.

    With `workers` > 1 the batches go to that many insertion threads (mongorestore's
    numInsertionWorkersPerCollection), unordered; at most two batches per worker wait, so
    memory stays bounded. One worker inserts ordered batches in archive order, which a
    capped collection needs (its natural order is the order of insertion)."""

    def __init__(self, name: str, collection: Any, workers: int = 1, validate: bool = False) -> None:
        self.name = name
        self.collection = collection
        self.buf = bytearray()
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.documents = 0
        self.workers = max(1, workers)
        self.pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="insert") if self.workers > 1 else None
        )
        self.pending: deque[Future[None]] = deque()
        self.validate = validate
        self.rejected = 0  # documents the target's validator refused (validate on)
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:
        self.buf += data
        pos, size = 0, len(self.buf)
        with memoryview(self.buf) as view:  # one copy per document, released before the trim
            while size - pos >= 4:
                (length,) = struct.unpack_from("<i", view, pos)
                if not 5 <= length <= MAX_DOCUMENT:
                    raise ArchiveError(f"collection {self.name!r} is damaged: BSON document length {length}")
                if size - pos < length:
                    break
                if view[pos + length - 1] != 0:
                    raise ArchiveError(f"collection {self.name!r} is damaged: BSON document not terminated")
                self._add(bytes(view[pos : pos + length]))
                pos += length
        del self.buf[:pos]
        return len(data)

    def _add(self, doc: bytes) -> None:
        if self.batch and (len(self.batch) >= BATCH_DOCS or self.batch_bytes + len(doc) > BATCH_BYTES):
            self._flush()
        self.batch.append(doc)
        self.batch_bytes += len(doc)

    def _flush(self) -> None:
        if not self.batch:
            return
        docs: list[Any] = [RawBSONDocument(d) for d in self.batch]  # the archive's bytes, as they are
        count = len(self.batch)
        self.batch, self.batch_bytes = [], 0
        if self.pool is None:
            self._insert(docs, ordered=True)
        else:
            while len(self.pending) >= 2 * self.workers:
                self.pending.popleft().result()  # the oldest batch's error, if any, is raised here
            self.pending.append(self.pool.submit(self._insert, docs, False))
        self.documents += count

    def _insert(self, docs: list[Any], ordered: bool) -> None:
        # The documents were valid in the source when the snapshot was taken; a validator
        # added later (collMod) must not make the restore of older ones fail, as with
        # mongorestore, which bypasses validation unless told otherwise (validate).
        if not self.validate:
            self.collection.insert_many(docs, ordered=ordered, bypass_document_validation=True)
            return
        try:
            self.collection.insert_many(docs, ordered=False)  # every valid document goes in
        except BulkWriteError as e:
            errors = e.details.get("writeErrors") or []
            if any(err.get("code") != DOCUMENT_VALIDATION_FAILURE for err in errors):
                raise
            with self.lock:
                self.rejected += len(errors)

    def abandon(self) -> None:
        """Stops the insertion threads (a no-op once closed): what they hold is not inserted."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def close(self) -> None:
        try:
            if self.buf:
                raise ArchiveError(f"collection {self.name!r} ends inside a BSON document")
            self._flush()
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.abandon()
