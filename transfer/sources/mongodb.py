"""MongoDB as source and restore target, moving raw BSON as mongodump writes it.

Collections are named "<db>.<collection>". A backup reads every non-system collection of
the configured databases (all user databases when none are configured) and archives the
concatenated BSON documents plus mongodump's `<collection>.metadata.json` (options and
indexes); archive.py lays both out as mongodump --gzip does, so the archive's `dump/`
directory restores with `mongorestore --gzip --dir dump`.

Documents cross this module as bytes: the source hands out `RawBSONDocument.raw`, the target
inserts `RawBSONDocument`s built from the archive stream. Clients that cannot produce or take
raw documents (mongomock, used by the tests because no server runs here) get a fallback that
encodes and decodes dicts with `bson`; the archive bytes are the same BSON either way.

Like mongodump without --oplog, each collection is read live and on its own: the snapshot is
not one point in time across collections. Views and time-series collections are skipped.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument
from pymongo import IndexModel, MongoClient
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from transfer.archive.format import ArchiveError
from transfer.errors import SourceError, TargetError
from transfer.storage.base import Partial

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
BATCH_DOCS = 1000
BATCH_BYTES = 16 * 1024 * 1024
# The server refuses user documents over 16 MiB; anything much larger is a damaged stream,
# and must not make the writer buffer the rest of the member waiting for it.
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024
SYSTEM_DATABASES = ("admin", "local", "config")
EXISTING = ("fail", "drop", "append")
RAW = CodecOptions(document_class=RawBSONDocument)
SAMPLE = 100

ClientFactory = Callable[..., Any]


def split_name(collection: str) -> tuple[str, str]:
    """Database names cannot contain dots, so the first dot separates db from collection."""
    db, dot, coll = collection.partition(".")
    if not dot or not db or not coll:
        raise ValueError(f"collection {collection!r} is not named <database>.<collection>")
    return db, coll


def _connect(factory: ClientFactory, url: str, password: str | None) -> Any:
    """The password travels as a keyword, never inside the URL, so it is in no message."""
    return factory(url, password=password) if password else factory(url)


def _redact(error: BaseException, password: str | None) -> str:
    """A short, secret-free reason: failure reasons become events, which are forever."""
    if isinstance(error, BulkWriteError):
        # Its str() carries the offending documents; the first server message is enough.
        errors = error.details.get("writeErrors") or [{}]
        text = str(errors[0].get("errmsg", "bulk write failed"))
    else:
        text = str(error)
    if password:
        text = text.replace(password, "***")
    return f"{type(error).__name__}: {text[:500]}"


def _raw_capable(database: Any) -> bool:
    """pymongo decodes to RawBSONDocument on request; mongomock refuses custom classes."""
    try:
        database.get_collection("snapledger-probe", codec_options=RAW)
    except NotImplementedError:
        return False
    return True


def _as_bytes(doc: Any) -> bytes | memoryview:
    """Since pymongo 4.18 a large raw document may be a read-only view of the reply."""
    return doc.raw if isinstance(doc, RawBSONDocument) else bson.encode(doc)


def _uuid_hex(info: dict[str, Any]) -> str | None:
    """mongodump writes the collection UUID as hex; mongorestore --preserveUUID reads it."""
    value = (info.get("info") or {}).get("uuid")
    if value is None:
        return None
    return value.hex if isinstance(value, uuid.UUID) else bytes(value).hex()


class MongoSource:
    kind = "mongodb"
    parallel = 1  # until configured: transfer/sources/registry.py sets the endpoint's `parallel`

    def __init__(
        self,
        name: str,
        url: str,
        password: str | None,
        databases: list[str],
        client_factory: ClientFactory = MongoClient,
    ) -> None:
        self.name = name
        self.url = url
        self._password = password
        self.databases = list(databases)
        self.client_factory = client_factory

    def __repr__(self) -> str:
        return f"MongoSource({self.name!r})"

    @contextmanager
    def open(self) -> Iterator[_MongoBackup]:
        """One client per run; driver errors leave as SourceError with the password scrubbed."""
        client = _connect(self.client_factory, self.url, self._password)
        try:
            yield _MongoBackup(self, client)
        except PyMongoError as e:
            raise SourceError(f"source {self.name!r}: {_redact(e, self._password)}") from None
        finally:
            client.close()


class _MongoBackup:
    parallel_safe = True  # pymongo clients are thread-safe; each read has its own cursor
    isolated_collections = False  # a driver error ends the run
    has_schema = False  # options and indexes travel per collection, in definition()

    def __init__(self, source: MongoSource, client: Any) -> None:
        self.source = source
        self.client = client
        self._info: dict[str, dict[str, Any]] = {}
        self._raw = _raw_capable(client.get_database("admin"))
        for db in self._database_names():
            for coll, info in _list_collections(client.get_database(db)).items():
                if not coll.startswith("system."):
                    self._info[f"{db}.{coll}"] = info

    def _database_names(self) -> list[str]:
        present = [d for d in self.client.list_database_names() if d not in SYSTEM_DATABASES]
        if not self.source.databases:
            return sorted(present)
        for db in self.source.databases:
            if db in SYSTEM_DATABASES:
                raise SourceError(f"source {self.source.name!r}: {db!r} is a system database, not backed up")
            if db not in present:
                raise SourceError(f"source {self.source.name!r}: database {db!r} has no collections")
        return list(self.source.databases)

    def _collection(self, collection: str, raw: bool = False) -> Any:
        db, coll = split_name(collection)
        if raw and self._raw:
            return self.client.get_database(db).get_collection(coll, codec_options=RAW)
        return self.client.get_database(db).get_collection(coll)

    def estimates(self) -> dict[str, int]:
        return {name: _estimate(self._collection(name)) for name in self._info}

    def definition(self, collection: str) -> bytes:
        """mongodump's metadata document, canonical extended JSON as mongorestore parses it."""
        info = self._info[collection]
        indexes = []
        for spec in self._collection(collection).list_indexes():
            spec = dict(spec)
            spec.pop("ns", None)  # servers before 4.4 name the old namespace
            indexes.append(spec)
        meta: dict[str, Any] = {"options": dict(info.get("options") or {}), "indexes": indexes}
        uuid_hex = _uuid_hex(info)
        if uuid_hex:
            meta["uuid"] = uuid_hex
        meta["collectionName"] = split_name(collection)[1]
        meta["type"] = "collection"
        return json_util.dumps(meta, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()

    def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
        return []  # never called: has_schema is False

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """Concatenated BSON documents in natural order, about CHUNK bytes at a time."""
        buf = bytearray()
        cursor = self._collection(collection, raw=True).find({})
        try:
            for doc in cursor:
                buf += _as_bytes(doc)
                if len(buf) >= CHUNK:
                    on_raw_bytes(len(buf))
                    yield bytes(buf)
                    buf.clear()
        finally:
            cursor.close()
        if buf:
            on_raw_bytes(len(buf))
            yield bytes(buf)


def _list_collections(database: Any) -> dict[str, dict[str, Any]]:
    """Plain collections with their listCollections entry (options, uuid), by name."""
    try:
        infos = list(database.list_collections(filter={"type": "collection"}))
    except NotImplementedError:  # mongomock: no listCollections, no options
        return {name: {} for name in sorted(database.list_collection_names())}
    return {info["name"]: info for info in sorted(infos, key=lambda i: i["name"])}


def _estimate(collection: Any) -> int:
    """Uncompressed data size for progress; collection stats when allowed, else a sample."""
    try:
        stats = list(collection.aggregate([{"$collStats": {"storageStats": {}}}]))
        return sum(int(s["storageStats"]["size"]) for s in stats)
    except (OperationFailure, NotImplementedError, KeyError):
        pass
    count = collection.estimated_document_count()
    if not count:
        return 0
    sample = [len(_as_bytes(d)) for d in collection.find({}).limit(SAMPLE)]
    return count * (sum(sample) // len(sample)) if sample else 0


class MongoTarget:
    """Restores each collection under its archived "<db>.<collection>" name, or the name the
    restore maps it to.

    There is no transaction across collections, so documents land in place as they stream;
    `transactional = False` makes the pipeline verify the whole archive before the first write.
    If the restore still fails (stop, refused policy, insert error, count mismatch) the session
    drops the collections it created and empties those it found empty. It cannot undo "drop"
    (the old collection is gone, as with `mongorestore --drop`) nor take back documents already
    appended to a collection that held documents before ("append").
    """

    kind = "mongodb"
    transactional = False

    def __init__(
        self,
        name: str,
        url: str,
        password: str | None,
        existing: str = "fail",
        client_factory: ClientFactory = MongoClient,
    ) -> None:
        if existing not in EXISTING:
            raise ValueError(f"target {name!r}: existing must be one of {', '.join(EXISTING)}")
        self.name = name
        self.url = url
        self._password = password
        self.existing = existing
        self.client_factory = client_factory

    def __repr__(self) -> str:
        return f"MongoTarget({self.name!r}, existing={self.existing!r})"

    def cleanup_partials(self) -> int:
        return 0  # documents land in place, never in files aside: there is nothing to remove

    def list_partials(self) -> list[Partial]:
        return []  # documents land in place: nothing is written aside

    def remove_partial(self, partial: Partial) -> bool:
        return False

    @contextmanager
    def open(self, source_kind: str, existing: str | None = None, **_: Any) -> Iterator[_MongoRestore]:
        """`existing` overrides the configured policy for this restore."""
        if source_kind != "mongodb":
            raise TargetError(f"target {self.name!r} takes MongoDB snapshots, not {source_kind}")
        policy = existing or self.existing
        if policy not in EXISTING:
            raise TargetError(f"target {self.name!r}: existing must be one of {', '.join(EXISTING)}")
        client = _connect(self.client_factory, self.url, self._password)
        session = _MongoRestore(self, client, policy)
        try:
            yield session
        except BaseException as e:
            session.rollback()
            if isinstance(e, PyMongoError):
                raise TargetError(f"target {self.name!r}: {_redact(e, self._password)}") from None
            raise
        finally:
            client.close()


@dataclass
class _Prepared:
    name: str  # "<db>.<collection>" in the target
    fresh: bool  # created by this session: dropped if the restore fails
    was_empty: bool  # found empty: emptied again if the restore fails
    baseline: int  # documents already there, not counted as restored
    indexes: list[IndexModel] = field(default_factory=list)


class _MongoRestore:
    def __init__(self, target: MongoTarget, client: Any, existing: str) -> None:
        self.target = target
        self.client = client
        self.existing = existing
        self.prepared: dict[str, _Prepared] = {}  # by archived collection name
        self.committed = False
        self._raw = _raw_capable(client.get_database("admin"))

    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        pass  # no database-wide schema: each collection is prepared with its own metadata

    def _collection(self, name: str) -> Any:
        db, coll = split_name(name)
        return self.client.get_database(db).get_collection(coll)

    def prepare(self, collection: str, definition: bytes | None, as_name: str | None = None) -> None:
        """Applies the existing policy, then creates the collection with its options.
        Indexes are built after the data, as mongorestore does: one build beats many updates."""
        name = as_name or collection
        try:
            db_name, coll = split_name(name)
        except ValueError as e:
            raise TargetError(f"target {self.target.name!r}: {e}") from None
        meta = _parse_metadata(collection, definition)
        database = self.client.get_database(db_name)
        exists = coll in database.list_collection_names(filter={"name": coll})
        empty = not exists or database.get_collection(coll).find_one({}, {"_id": 1}) is None
        if self.existing == "fail" and not empty:
            raise TargetError(
                f"target {self.target.name!r}: collection {name!r} already has documents "
                "(choose existing = drop or append)"
            )
        if exists and self.existing == "drop":
            database.drop_collection(coll)
            exists = False
        baseline = 0 if empty or not exists else database.get_collection(coll).count_documents({})
        if not exists:
            database.create_collection(coll, **dict(meta.get("options") or {}))
        self.prepared[collection] = _Prepared(
            name=name,
            fresh=not exists,
            was_empty=exists and empty,
            baseline=baseline,
            indexes=_index_models(meta.get("indexes") or []),
        )

    @contextmanager
    def open_out(self, collection: str) -> Iterator[_BsonWriter]:
        prepared = self.prepared[collection]
        target = self._collection(prepared.name)
        writer = _BsonWriter(collection, target, self._raw)
        yield writer
        writer.close()
        if prepared.indexes:
            target.create_indexes(prepared.indexes)

    def count_items(self, collection: str) -> int:
        """Reads the target itself; documents that were there before do not count."""
        prepared = self.prepared.get(collection)
        if prepared is None:
            return 0
        total: int = self._collection(prepared.name).count_documents({})
        return total - prepared.baseline

    def commit(self) -> None:
        """Writes are already durable in place; committing only disarms the rollback."""
        self.committed = True

    def schema_notes(self) -> dict[str, Any] | None:
        return None  # nothing beyond the counts to report

    def rollback(self) -> None:
        if self.committed:
            return
        for prepared in self.prepared.values():
            try:
                if prepared.fresh:
                    self._collection(prepared.name).drop()
                elif prepared.was_empty:
                    self._collection(prepared.name).delete_many({})
            except Exception:  # keep the restore's own error; this one is only logged
                log.warning("could not undo collection %s after a failed restore", prepared.name)


def _parse_metadata(collection: str, definition: bytes | None) -> dict[str, Any]:
    if definition is None:
        return {}
    try:
        meta = json_util.loads(definition)
    except (ValueError, TypeError):
        raise ArchiveError(f"collection {collection!r} has unreadable metadata") from None
    if not isinstance(meta, dict):
        raise ArchiveError(f"collection {collection!r} has unreadable metadata")
    return meta


def _index_models(specs: list[dict[str, Any]]) -> list[IndexModel]:
    """The dump's index specs minus what the server supplies itself (_id_, version, ns)."""
    models = []
    for spec in specs:
        spec = dict(spec)
        if spec.get("name") == "_id_" or spec.get("clustered"):
            continue
        key = [(k, _direction(v)) for k, v in spec.pop("key").items()]
        for drop in ("v", "ns", "background"):
            spec.pop(drop, None)
        models.append(IndexModel(key, **spec))
    return models


def _direction(value: Any) -> Any:
    """Old shells stored 1.0 for ascending; pymongo takes int, str or document only."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _BsonWriter:
    """Cuts a BSON stream into documents by their little-endian length prefix, carrying a
    partial document across writes, and inserts them in ordered batches."""

    def __init__(self, name: str, collection: Any, raw: bool) -> None:
        self.name = name
        self.collection = collection
        self.raw = raw
        self.buf = bytearray()
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.documents = 0

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
        if self.raw:
            docs: list[Any] = [RawBSONDocument(d) for d in self.batch]
        else:
            try:
                docs = bson.decode_all(b"".join(self.batch))
            except InvalidBSON as e:
                raise ArchiveError(f"collection {self.name!r} is damaged: {e}") from None
        self.collection.insert_many(docs, ordered=True)
        self.documents += len(self.batch)
        self.batch, self.batch_bytes = [], 0

    def close(self) -> None:
        if self.buf:
            raise ArchiveError(f"collection {self.name!r} ends inside a BSON document")
        self._flush()
