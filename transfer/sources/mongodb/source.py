"""MongoDB as source and restore target, moving raw BSON as mongodump writes it.

Collections are named "<db>.<collection>". A backup reads every non-system collection of
the configured databases (all user databases when none are configured) and archives the
concatenated BSON documents plus mongodump's `<collection>.metadata.json` (options and
indexes); transfer/archive/format.py lays both out as mongodump --gzip does, so the archive's `dump/`
directory restores with `mongorestore --gzip --dir dump`.

Documents cross this module as bytes: the source hands out `RawBSONDocument.raw`, the target
inserts `RawBSONDocument`s built from the archive stream; no document is decoded on the way.

On a replica set member the snapshot is one point in time, as with mongodump --oplog: the
oplog position is taken before the first collection is read and the changes made meanwhile
are archived after the collections, to be replayed on restore (oplog.py). On a standalone
server, which keeps no oplog, each collection is read as it is then, and the snapshot says
so. Views are archived as their definitions; time-series collections as their measurements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bson import json_util
from pymongo import MongoClient, ReadPreference, uri_parser
from pymongo.errors import OperationFailure, PyMongoError

from transfer.errors import SourceError
from transfer.ports import PointInTime
from transfer.sources.mongodb import auth, oplog
from transfer.sources.mongodb.connection import (
    CHUNK,
    RAW,
    SAMPLE,
    SYSTEM_DATABASES,
    ClientFactory,
    as_bytes,
    collection_uuid,
    connect,
    redacted,
    split_name,
)


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
        read_preference: str = "secondaryPreferred",
        users_and_roles: bool = False,
    ) -> None:
        self.name = name
        self.url = url
        self._password = password
        self.databases = list(databases)
        self.client_factory = client_factory
        self.read_preference = read_preference
        self.users_and_roles = users_and_roles  # mongodump --dumpDbUsersAndRoles, per database

    def __repr__(self) -> str:
        return f"MongoSource({self.name!r})"

    @contextmanager
    def open(self) -> Iterator[_MongoBackup]:
        """One client per run, pinned to one member: the one `read_preference` picks (by
        default a secondary, so the backup does not load the primary). Every read of the run,
        collections and oplog alike, goes to that member, so they agree on one history.
        Driver errors leave as SourceError with the password scrubbed."""
        client = connect(self.client_factory, self.url, self._password)
        try:
            client, member = _pinned(self, client)
            yield _MongoBackup(self, client, member)
        except PyMongoError as e:
            raise SourceError(f"source {self.name!r}: {redacted(e, self._password)}") from None
        finally:
            client.close()

    def capture_client(self) -> Any:
        """A client for continuous capture, on the member `read_preference` picks, as a
        backup's reads are. The caller closes it."""
        client = connect(self.client_factory, self.url, self._password)
        try:
            return _pinned(self, client)[0]
        except PyMongoError as e:
            client.close()
            raise SourceError(f"source {self.name!r}: {redacted(e, self._password)}") from None


PREFERENCES = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}
_NOT_CARRIED = ("replicaset", "directconnection", "readpreference", "readpreferencetags", "srvservicename")


def _pinned(source: MongoSource, client: Any) -> tuple[Any, str | None]:
    """A client on the member the read preference picks, connected to it alone, and that
    member's address; the client as it is where there is nothing to pick."""
    chosen = client.admin.command("hello", read_preference=PREFERENCES[source.read_preference])
    member = chosen.get("me")
    if not member or not chosen.get("setName"):
        return client, None  # a standalone server is its own only member
    parsed = uri_parser.parse_uri(source.url)
    options = {k: v for k, v in parsed["options"].items() if k.lower() not in _NOT_CARRIED}
    if parsed.get("username"):
        options["username"] = parsed["username"]
    pinned = connect(
        source.client_factory, f"mongodb://{member}/", source._password, directConnection=True, **options
    )
    client.close()
    return pinned, str(member)


class _MongoBackup:
    parallel_safe = True  # pymongo clients are thread-safe; each read has its own cursor
    isolated_collections = False  # a driver error ends the run
    has_schema = True  # views: their definitions lead the archive, as mongodump's metadata

    def __init__(self, source: MongoSource, client: Any, member: str | None = None) -> None:
        self.source = source
        self.client = client
        self.member = member  # the replica set member every read of this run goes to
        self._info: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}  # "<db>.<view>": its listCollections entry
        # Before anything is read: the changes to replay start after this entry.
        self._start = oplog.newest(client) if member is not None else None  # a replica set member
        self.databases = self._database_names()
        for db in self.databases:
            database = client.get_database(db)
            for coll, info in _list_collections(database).items():
                if not coll.startswith("system."):
                    self._info[f"{db}.{coll}"] = info
            for view, info in _list_collections(database, VIEW_TYPES).items():
                self.views[f"{db}.{view}"] = info

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
        if raw:
            return self.client.get_database(db).get_collection(coll, codec_options=RAW)
        return self.client.get_database(db).get_collection(coll)

    def estimates(self) -> dict[str, int]:
        averages: dict[str, int] = {}

        def average(db: str) -> int:
            if db not in averages:
                averages[db] = _average_size(self.client.get_database(db))
            return averages[db]

        out = {}
        for name in self._info:
            db = split_name(name)[0]
            out[name] = _estimate(self._collection(name), functools.partial(average, db))
        return out

    def definition(self, collection: str) -> bytes:
        """mongodump's metadata document, canonical extended JSON as mongorestore parses it."""
        info = self._info[collection]
        indexes = []
        for spec in self._collection(collection).list_indexes():
            spec = dict(spec)
            spec.pop("ns", None)  # servers before 4.4 name the old namespace
            indexes.append(spec)
        meta: dict[str, Any] = {"options": dict(info.get("options") or {}), "indexes": indexes}
        found_uuid = collection_uuid(info)
        if found_uuid:
            meta["uuid"] = found_uuid
        meta["collectionName"] = split_name(collection)[1]
        meta["type"] = "collection"
        return json_util.dumps(meta, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()

    def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
        """Each view's mongodump metadata (viewOn, pipeline, collation), named "<db>.<view>".
        A view holds no documents, so it has no data member; it is restored with the
        collection it reads from. With users_and_roles, each database's users and roles."""
        members = []
        for name, info in sorted(self.views.items()):
            meta = {
                "options": dict(info.get("options") or {}),
                "indexes": [],
                "collectionName": split_name(name)[1],
                "type": "view",
            }
            members.append(
                (name, json_util.dumps(meta, json_options=json_util.CANONICAL_JSON_OPTIONS).encode())
            )
        if self.source.users_and_roles:
            for db in self.databases:
                members.extend(auth.read(self.client.get_database(db)))
        return members

    def point_in_time(self) -> PointInTime:
        if self._start is None:
            return PointInTime(
                False, "a standalone server keeps no oplog: each collection is read as it is then"
            )
        end, at, changes = oplog.capture(self.client, self._start, self.databases)
        how = "oplog: what changed while the collections were read is replayed after them"
        return PointInTime(True, how, oplog.cluster_time(end), changes, self.member, at)

    def read_chunks(self, collection: str, on_raw_bytes: Callable[[int], None]) -> Iterator[bytes]:
        """Concatenated BSON documents in natural order, about CHUNK bytes at a time."""
        buf = bytearray()
        cursor = self._collection(collection, raw=True).find({})
        try:
            for doc in cursor:
                buf += as_bytes(doc)
                if len(buf) >= CHUNK:
                    on_raw_bytes(len(buf))
                    yield bytes(buf)
                    buf.clear()
        finally:
            cursor.close()
        if buf:
            on_raw_bytes(len(buf))
            yield bytes(buf)


# What listCollections calls each kind. Time-series collections are read as their
# measurements and restored into a time-series collection of the same options.
COLLECTION_TYPES = ("collection", "timeseries")
VIEW_TYPES = ("view",)


def _list_collections(database: Any, types: tuple[str, ...] = COLLECTION_TYPES) -> dict[str, dict[str, Any]]:
    """Collections (or views) with their listCollections entry (options, uuid), by name."""
    infos = list(database.list_collections(filter={"type": {"$in": list(types)}}))
    return {info["name"]: info for info in sorted(infos, key=lambda i: i["name"])}


def _estimate(collection: Any, average: Callable[[], int]) -> int:
    """Uncompressed data size for progress: collection stats where the server reports a
    size; else the document count times the database's average document size (dbStats),
    or a sample's where the server has no dbStats either. Some servers, and users without
    the clusterMonitor role, report no size, or 0."""
    count = None
    try:
        stats = list(collection.aggregate([{"$collStats": {"storageStats": {}}}]))
        size = sum(int(s["storageStats"]["size"]) for s in stats)
        if size > 0:
            return size
        count = sum(int(s["storageStats"].get("count", 0)) for s in stats)
    except (OperationFailure, KeyError):  # not allowed (no clusterMonitor role), or no stats
        pass
    if count is None:
        count = collection.estimated_document_count()
    if not count:
        return 0
    per_document = average()
    if per_document <= 0:
        sample = [len(as_bytes(d)) for d in collection.find({}).limit(SAMPLE)]
        per_document = sum(sample) // len(sample) if sample else 0
    return count * per_document


def _average_size(database: Any) -> int:
    """The database's average document size, where the server answers dbStats; else 0."""
    try:
        return int(database.command("dbStats").get("avgObjSize") or 0)
    except (OperationFailure, TypeError, ValueError):
        return 0
