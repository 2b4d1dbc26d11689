"""MongoDB source and restore target: raw BSON through the archive in mongodump's layout.

Against real servers over the wire (tests/support/mongo.py): the source and the target are
two servers, SecantusDB by default, or the ones SNAPLEDGER_TEST_MONGODB_URL and
SNAPLEDGER_TEST_MONGODB_TARGET_URL name (throwaway servers: the tests drop the databases
they use). Where a real server cannot show a case, a test says so.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from bson import ObjectId
from bson.int64 import Int64

from transfer.archive.format import ArchiveError
from transfer.errors import SourceError, Stopped, TargetError
from transfer.runs.backup import run_backup
from transfer.runs.contract import BackupResult, RestoreResult
from transfer.runs.restore import run_restore
from transfer.sources.mongodb.connection import split_name
from transfer.sources.mongodb.source import MongoSource
from transfer.sources.mongodb.target import MongoTarget
from transfer.sources.mongodb.writer import BsonWriter
from transfer.storage import LocalStorage
from transfer.storage.layout import manifest_key

KEY = "nightly/snap-1.tar"
SECRET = "pw-Very-s3cret-mongo"
ORDERS = 2500  # several insert batches of 1000 and several 1 MiB read chunks


def _quiet(*_: Any) -> None:
    pass


def _never() -> bool:
    return False


def url_of(client: Any) -> str:
    host, port = client.address
    return f"mongodb://{host}:{port}/?directConnection=true"


def user_databases(client: Any) -> list[str]:
    return sorted(d for d in client.list_database_names() if d not in ("admin", "config", "local"))


def _fresh(client: Any) -> Any:
    for db in user_databases(client):
        client.drop_database(db)
    return client


def seed(client: Any, shop: str = "shop", crm: str = "crm") -> list[str]:
    """Documents an operator would have: unicode, nulls, nesting, ~1 MB values, ObjectIds,
    datetimes, 64-bit ints, an empty collection with an index. Answers the namespaces."""
    start = datetime(2024, 2, 29, 23, 59, 59, 123000)  # BSON keeps milliseconds
    client[shop]["orders"].insert_many(
        [
            {
                "_id": ObjectId(),
                "n": i,
                "customer": f"Zoë {i} — 東京 🚀",
                "note": None if i % 3 == 0 else "ok",
                "lines": [{"sku": f"S{i % 17}", "qty": i % 5, "tags": ["a", {"deep": [None, i]}]}],
                "placed": start + timedelta(milliseconds=i),
                "cents": Int64(i * 10**12),
                "ratio": i / 7,
                "paid": i % 2 == 0,
            }
            for i in range(ORDERS)
        ]
    )
    client[shop]["blobs"].insert_many(
        [
            {"_id": 1, "payload": "é" * 550_000},  # ~1.1 MB of UTF-8 in one document
            {"_id": 2, "payload": "x" * 1_048_576},
            {"_id": 3, "payload": ""},
        ]
    )
    client[shop].create_collection("empty")
    client[shop]["empty"].create_index([("sku", 1)], name="sku_1")
    client[crm]["customers"].insert_many([{"email": f"c{i}@example.com", "since": start} for i in range(50)])
    client[crm]["customers"].create_index([("email", 1)], unique=True, name="email_1")
    client[crm]["café s"].insert_one({"_id": "x", "v": {"nested": {"deeper": None}}})
    return sorted([f"{shop}.orders", f"{shop}.blobs", f"{shop}.empty", f"{crm}.customers", f"{crm}.café s"])


def docs(client: Any, ns: str) -> list[dict[str, Any]]:
    db, coll = split_name(ns)
    return list(client[db][coll].find().sort("_id", 1))


def indexes(client: Any, ns: str) -> dict[str, tuple[list[tuple[str, Any]], bool]]:
    db, coll = split_name(ns)
    return {
        i["name"]: (list(i["key"].items()), bool(i.get("unique"))) for i in client[db][coll].list_indexes()
    }


def backup(storage: LocalStorage, client: Any, databases: list[str] | None = None) -> BackupResult:
    source = MongoSource("mongo-src", url_of(client), None, databases or [])
    return run_backup(source, storage, KEY, [], [], {"policy": "nightly"}, _quiet, _never)


def mongo_target(client: Any, existing: str = "fail") -> MongoTarget:
    return MongoTarget("mongo-dst", url_of(client), None, existing)


def restore(
    storage: LocalStorage, client: Any, existing: str = "fail", collections: list[str] | None = None
) -> RestoreResult:
    return run_restore(storage, KEY, mongo_target(client, existing), collections or [], _quiet, _never)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", tmp_path / "store")


@pytest.fixture
def source(mongo_url: str) -> Iterator[Any]:
    with pymongo.MongoClient(mongo_url) as client:
        _fresh(client)
        client.admin["settings"].insert_one({"never": "backed up"})
        yield client
        client.admin["settings"].drop()


@pytest.fixture
def target(mongo_target_url: str) -> Iterator[Any]:
    with pymongo.MongoClient(mongo_target_url) as client:
        yield _fresh(client)


def test_round_trip_document_for_document(storage, source, target):
    names = seed(source)
    result = backup(storage, source)
    assert sorted(result.collections) == names  # admin and system collections are skipped
    manifest = json.loads(storage.get_bytes(manifest_key(KEY)))
    assert manifest["source_kind"] == "mongodb"
    for ns in names:
        assert manifest["collections"][ns]["items"] == len(docs(source, ns))
    assert manifest["collections"]["shop.orders"]["items"] == ORDERS
    assert manifest["collections"]["shop.empty"]["items"] == 0
    assert manifest["items"] == ORDERS + 3 + 50 + 1

    restored = restore(storage, target)

    assert restored.items == manifest["items"]
    assert all(c["ok"] for c in restored.collections.values())
    assert user_databases(target) == ["crm", "shop"]
    for ns in names:
        assert docs(target, ns) == docs(source, ns), ns
    assert "shop.empty" in [f"shop.{c}" for c in target.shop.list_collection_names()]
    assert indexes(target, "crm.customers")["email_1"] == ([("email", 1)], True)
    assert indexes(target, "shop.empty")["sku_1"] == ([("sku", 1)], False)


def test_archive_is_what_mongorestore_reads(storage, source):
    """After `tar -xf`, `mongorestore --gzip --dir dump` finds <db>/<coll>.bson.gz and the
    gzipped .metadata.json.gz beside it, collection names escaped as mongodump escapes them."""
    names = seed(source)
    backup(storage, source)
    with tarfile.open(storage.path(KEY)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert tar.getmembers()[-1].name == "manifest.json"
    expected = {"manifest.json", "dump/oplog.bson.gz"}  # mongorestore --oplogReplay reads it
    for ns in names:
        db, coll = split_name(ns)
        escaped = coll.replace("é", "%C3%A9").replace(" ", "%20")
        expected |= {f"dump/{db}/{escaped}.bson.gz", f"dump/{db}/{escaped}.metadata.json.gz"}
    assert set(members) == expected
    assert "dump/crm/caf%C3%A9%20s.bson.gz" in members

    orders = bson.decode_all(gzip.decompress(members["dump/shop/orders.bson.gz"]))
    assert sorted(orders, key=lambda d: d["_id"]) == docs(source, "shop.orders")
    assert gzip.decompress(members["dump/shop/empty.bson.gz"]) == b""
    meta = json.loads(gzip.decompress(members["dump/crm/customers.metadata.json.gz"]))
    assert meta["collectionName"] == "customers" and meta["options"] == {}
    email = next(i for i in meta["indexes"] if i["name"] == "email_1")
    # canonical extended JSON, as mongodump writes and mongorestore parses
    assert email == {
        "key": {"email": {"$numberInt": "1"}},
        "unique": True,
        "name": "email_1",
        "v": {"$numberInt": "2"},
    }


def test_databases_setting_selects_and_checks(storage, source):
    seed(source)
    assert sorted(backup(storage, source, ["crm"]).collections) == ["crm.café s", "crm.customers"]
    with pytest.raises(SourceError, match="'nope'"):
        backup(LocalStorage("other", storage.root.parent / "other"), source, ["nope"])


def test_existing_fail_refuses_and_leaves_no_new_collection(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.orders.insert_one({"_id": "theirs"})
    with pytest.raises(TargetError, match="'mongo-dst'.*'shop.orders' already has documents"):
        restore(storage, target, "fail")
    assert target.crm.list_collection_names() == []  # restored before the refusal, dropped
    assert target.shop.list_collection_names() == ["orders"]
    assert docs(target, "shop.orders") == [{"_id": "theirs"}]


def test_existing_fail_takes_an_empty_collection(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.create_collection("orders")
    restore(storage, target, "fail")
    assert docs(target, "shop.orders") == docs(source, "shop.orders")


def test_existing_drop_replaces(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.orders.insert_one({"_id": "theirs"})
    restore(storage, target, "drop")
    assert docs(target, "shop.orders") == docs(source, "shop.orders")


def test_existing_append_keeps_and_counts_only_restored(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.orders.insert_one({"_id": "theirs"})
    result = restore(storage, target, "append")
    assert result.collections["shop.orders"] == {"expected": ORDERS, "found": ORDERS, "ok": True}
    assert target.shop.orders.count_documents({}) == ORDERS + 1
    assert target.shop.orders.find_one({"_id": "theirs"}) == {"_id": "theirs"}


def test_append_conflict_fails_cleanly(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.blobs.insert_one({"_id": 2, "payload": "theirs"})
    with pytest.raises(TargetError) as failed:
        restore(storage, target, "append")
    assert "'mongo-dst'" in str(failed.value) and len(str(failed.value)) < 700  # no documents in it
    assert target.crm.list_collection_names() == []
    assert target.shop.list_collection_names() == ["blobs"]  # pre-existing: kept


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_flipped_byte_fails_restore_and_leaves_no_new_collection(storage, source, target, where):
    seed(source)
    backup(storage, source)
    _flip_byte(storage, "dump/shop/orders.bson.gz", where)
    with pytest.raises(ArchiveError, match="shop.orders"):
        restore(storage, target)
    assert all(target[db].list_collection_names() == [] for db in user_databases(target))


def _stop_once_written(target: Any, ns: str, seen: list[int]) -> Any:
    """A report hook that stops the restore once documents of `ns` are in the target, i.e.
    after the archive was verified and writing is under way."""
    db, coll = split_name(ns)

    def report(items: int, read: int, percent: float, name: str | None) -> None:
        if name == ns and target[db][coll].count_documents({}):
            seen.append(target[db][coll].count_documents({}))
            raise Stopped

    return report


def test_stopped_restore_leaves_no_new_collection(storage, source, target):
    seed(source)
    backup(storage, source)
    seen: list[int] = []
    mongo = mongo_target(target)
    with pytest.raises(Stopped):
        run_restore(storage, KEY, mongo, [], _stop_once_written(target, "shop.orders", seen), _never)
    assert seen and seen[0] > 0  # documents had landed before the stop
    assert all(target[db].list_collection_names() == [] for db in user_databases(target))


def test_restore_selected_collection(storage, source, target):
    seed(source)
    backup(storage, source)
    restore(storage, target, collections=["shop.blobs"])
    assert user_databases(target) == ["shop"]
    assert docs(target, "shop.blobs") == docs(source, "shop.blobs")


def test_target_takes_only_mongodb_snapshots(target):
    mongo = mongo_target(target)
    with pytest.raises(TargetError, match="'mongo-dst'.*ndjson"):
        with mongo.open("ndjson"):
            pass


def test_a_refused_password_is_kept_out_of_errors_and_events(storage, tmp_path):
    """A real server with authentication: the password travels as a keyword, never in the
    URL, and the refusal (it can repeat what it was given) is scrubbed before it is kept."""
    from tests.support.mongo import secantus
    from tests.support.servers import free_port

    port, data = free_port(), str(tmp_path / "auth")
    with secantus(storage=data, port=port) as url, pymongo.MongoClient(url) as client:
        client.admin.command("createUser", "backup", pwd="the-right-one", roles=["root"])
    seen: dict[str, Any] = {}

    def spying(url: str, **kwargs: Any) -> Any:
        seen.update(url=url, **kwargs)
        return pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, **kwargs)

    with secantus(storage=data, auth=True, port=port):
        wrong = f"mongodb://backup@127.0.0.1:{port}/?directConnection=true"
        source = MongoSource("mongo-src", wrong, SECRET, [], spying)
        with pytest.raises(SourceError) as failed:
            run_backup(source, storage, KEY, [], [], {}, _quiet, _never)
    assert seen["url"] == wrong and seen["password"] == SECRET  # a keyword, not in the URL
    assert "authentication failed" in str(failed.value) and "'mongo-src'" in str(failed.value)
    assert SECRET not in str(failed.value) and SECRET not in repr(source)


def test_estimates_where_collection_stats_are_refused():
    """A user without the clusterMonitor role is refused $collStats. SecantusDB does not
    refuse it to anyone, so one collection stands in for that server here: the estimate is
    the document count times the database's average size."""
    from pymongo.errors import OperationFailure

    from transfer.sources.mongodb.source import _estimate

    class Refusing:
        def aggregate(self, pipeline: Any) -> Any:
            raise OperationFailure("not authorized on shop to execute command { aggregate: ... }", 13)

        def estimated_document_count(self) -> int:
            return 2500

    assert _estimate(Refusing(), lambda: 400) == 2500 * 400


def _flip_byte(storage: LocalStorage, member_name: str, where: float = 0.5) -> None:
    path = storage.path(KEY)
    with tarfile.open(path) as tar:
        member = tar.getmember(member_name)
    data = bytearray(path.read_bytes())
    data[member.offset_data + int(member.size * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_failed_restore_empties_a_collection_it_found_empty(storage, source, target):
    seed(source)
    backup(storage, source)
    target.shop.create_collection("orders")
    target.shop.orders.create_index([("keep", 1)], name="keep_1")
    seen: list[int] = []
    mongo = mongo_target(target)
    with pytest.raises(Stopped):
        run_restore(storage, KEY, mongo, [], _stop_once_written(target, "shop.orders", seen), _never)
    assert seen and seen[0] > 0
    assert target.shop.list_collection_names() == ["orders"]
    assert target.shop.orders.count_documents({}) == 0
    assert "keep_1" in indexes(target, "shop.orders")


def test_session_maps_names_and_overrides_policy(storage, source, target):
    """The restore may rename a collection (as_name) and override the configured policy."""
    seed(source)
    backup(storage, source)
    target.archive.orders_2024.insert_one({"_id": "old"})
    with tarfile.open(storage.path(KEY)) as tar:
        raw = gzip.decompress(tar.extractfile("dump/shop/blobs.bson.gz").read())
        meta = gzip.decompress(tar.extractfile("dump/shop/blobs.metadata.json.gz").read())
    mongo = mongo_target(target)
    with mongo.open("mongodb", "drop") as session:
        session.prepare("shop.blobs", meta, "archive.orders_2024")
        with session.open_out("shop.blobs") as out:
            for pos in range(0, len(raw), 7777):
                out.write(raw[pos : pos + 7777])
        assert session.count_items("shop.blobs") == 3
        session.commit()
    assert docs(target, "archive.orders_2024") == docs(source, "shop.blobs")
    assert "shop" not in user_databases(target)
    with pytest.raises(TargetError, match="existing must be one of"):
        with mongo.open("mongodb", "truncate"):
            pass
    with pytest.raises(TargetError, match="<database>.<collection>"):
        with mongo.open("mongodb") as session:
            session.prepare("shop.blobs", meta, "no_database_given")
    assert MongoTarget.transactional is False  # the pipeline verifies the archive first


class _Recorder:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def insert_many(self, documents: list[Any], ordered: bool = True, **_: Any) -> None:
        assert ordered
        self.batches.append([d.raw for d in documents])


@pytest.mark.parametrize("step", [1, 3, 4, 5, 4096, 1 << 20])
def test_writer_cuts_documents_at_any_chunk_boundary(step):
    documents = [bson.encode({"_id": i, "s": "é" * (i % 300)}) for i in range(2345)]
    documents.append(bson.encode({"_id": "big", "s": "x" * 3_000_000}))
    stream = b"".join(documents)
    recorder = _Recorder()
    writer = BsonWriter("shop.orders", recorder)
    for pos in range(0, len(stream), step):
        writer.write(stream[pos : pos + step])
    writer.close()
    assert [d for batch in recorder.batches for d in batch] == documents
    assert all(len(batch) <= 1000 for batch in recorder.batches)


def test_writer_refuses_a_stream_cut_inside_a_document():
    writer = BsonWriter("shop.orders", _Recorder())
    writer.write(bson.encode({"a": 1})[:-2])
    with pytest.raises(ArchiveError, match="ends inside a BSON document"):
        writer.close()
    with pytest.raises(ArchiveError, match="document length"):
        BsonWriter("shop.orders", _Recorder()).write(b"\xff\xff\xff\x7f" + b"\0" * 8)


def test_estimates_move_progress_where_collection_stats_report_no_size(storage, source):
    """SecantusDB reports `storageStats.size` 0, as some servers and roles do: progress stayed
    at 0% until the end. The estimate falls back to count times average document size."""
    seed(source)
    assert source.shop.command("collStats", "orders").get("size", 0) >= 0
    with MongoSource("mongo-src", url_of(source), None, []).open() as session:
        estimates = session.estimates()
    assert estimates["shop.empty"] == 0
    assert all(estimates[ns] > 0 for ns in estimates if ns != "shop.empty")
    actual = sum(len(bson.encode(d)) for ns in estimates for d in docs(source, ns))
    assert actual / 2 < sum(estimates.values()) < actual * 2  # the database's average size, times counts
    percents: list[float] = []
    src = MongoSource("mongo-src", url_of(source), None, ["shop"])
    run_backup(src, storage, KEY, [], [], {}, lambda i, b, p, n: percents.append(p), _never)
    assert any(0 < p < 100 for p in percents), percents


# ------------------------------------------------------------ every collection kind
def canonical(client: Any, ns: str) -> tuple[int, str]:
    """Count and SHA-256 of the canonical extended JSON of every document, by _id."""
    import hashlib

    from bson import json_util

    db, coll = split_name(ns)
    rows = [
        json_util.dumps(d, json_options=json_util.CANONICAL_JSON_OPTIONS)
        for d in client[db][coll].find().sort("_id", 1)
    ]
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


def seed_every_kind(client: Any) -> None:
    """What a production database holds besides plain collections."""
    from pymongo import ASCENDING, DESCENDING, GEOSPHERE

    shop = client["kinds"]
    shop.create_collection("capped", capped=True, size=1 << 20, max=500)
    shop.capped.insert_many([{"_id": i, "seq": i} for i in range(700)])
    shop.create_collection("clustered", clusteredIndex={"key": {"_id": 1}, "unique": True})
    shop.clustered.insert_many([{"_id": i, "v": str(i)} for i in range(50)])
    shop.create_collection("named", collation={"locale": "fr", "strength": 2})
    shop.named.insert_many([{"_id": i, "name": n} for i, n in enumerate(["École", "ecole", "Zoë", "zoe"])])
    shop.create_collection("events", timeseries={"timeField": "t", "metaField": "m"})
    start = datetime(2026, 1, 1)
    shop.events.insert_many(
        [{"t": start + timedelta(minutes=i), "m": {"s": i % 3}, "v": i} for i in range(100)]
    )
    shop.create_collection("strict")
    shop.strict.insert_many([{"_id": i, "qty": i} for i in range(10)])
    # A rule added later: the old documents break it, as they do in production.
    shop.command("collMod", "strict", validator={"qty": {"$gte": 5}}, validationLevel="moderate")
    places = shop["places"]
    places.insert_many(
        [
            {
                "_id": i,
                "loc": {"type": "Point", "coordinates": [i % 180, i % 90]},
                "tags": [f"t{i % 4}"],
                "expires": start,
                "opt": i if i % 2 else None,
                "attrs": {"a": i},
            }
            for i in range(200)
        ]
    )
    places.create_index([("loc", GEOSPHERE)], name="loc_2dsphere")
    places.create_index([("tags", ASCENDING), ("_id", DESCENDING)], name="tags_id")
    places.create_index([("expires", ASCENDING)], expireAfterSeconds=3600 * 24 * 365 * 50, name="ttl")
    places.create_index([("opt", ASCENDING)], sparse=True, name="opt_sparse")
    places.create_index(
        [("attrs.a", ASCENDING)], partialFilterExpression={"attrs.a": {"$gt": 100}}, name="partial"
    )
    places.create_index([("attrs.$**", ASCENDING)], name="wild")
    places.create_index([("tags", ASCENDING)], collation={"locale": "de"}, name="tags_de")
    client["kinds"]["dotted.name ü"].insert_one({"_id": "x", "a.b": 1})
    shop.command("create", "big_places", viewOn="places", pipeline=[{"$match": {"_id": {"$gte": 100}}}])
    shop.command(
        "create", "bigger_places", viewOn="big_places", pipeline=[{"$match": {"_id": {"$gte": 150}}}]
    )
    shop.command(
        "create",
        "sorted_names",
        viewOn="named",
        pipeline=[{"$sort": {"name": 1}}],
        collation={"locale": "fr"},
    )


def _shape(client: Any, db: str) -> dict[str, Any]:
    """Each collection's and view's options and indexes, as listCollections and listIndexes answer."""
    out: dict[str, Any] = {}
    for info in client[db].list_collections():
        name = info["name"]
        if name.startswith("system."):
            continue
        options = dict(info.get("options") or {})
        out[name] = {"type": info.get("type"), "options": options}
        if info.get("type") != "view":
            out[name]["indexes"] = sorted(
                (
                    {k: v for k, v in i.items() if k not in ("v", "ns")}
                    for i in client[db][name].list_indexes()
                ),
                key=lambda i: i["name"],
            )
    return out


def test_every_collection_kind_round_trips(storage, source, target):
    seed_every_kind(source)
    result = backup(storage, source)
    assert "kinds.big_places" not in result.collections  # a view holds no documents
    restored = restore(storage, target)
    assert all(c["ok"] for c in restored.collections.values()), restored.collections
    assert _shape(target, "kinds") == _shape(source, "kinds")
    for name in ("capped", "clustered", "named", "strict", "places", "dotted.name ü"):
        assert canonical(target, f"kinds.{name}") == canonical(source, f"kinds.{name}"), name
    natural = [d["seq"] for d in source.kinds.capped.find()]  # mongod keeps the newest 500, in order
    assert [d["seq"] for d in target.kinds.capped.find()] == natural
    assert [d["v"] for d in target.kinds.events.find().sort("t", 1)] == list(range(100))
    assert [d["_id"] for d in target.kinds.bigger_places.find().sort("_id", 1)] == list(range(150, 200))
    assert [d["name"] for d in target.kinds.sorted_names.find()] == [
        d["name"] for d in source.kinds.sorted_names.find()
    ]


def test_a_view_follows_its_collection(storage, source, target):
    seed_every_kind(source)
    backup(storage, source)
    run_restore(storage, KEY, mongo_target(target), ["kinds.named"], _quiet, _never)
    assert sorted(target.kinds.list_collection_names()) == [
        "named",
        "sorted_names",
    ]  # no places, no views of it
    target.drop_database("kinds")
    mongo = mongo_target(target)
    run_restore(
        storage, KEY, mongo, ["kinds.places"], _quiet, _never, mapping={"kinds.places": "moved.spots"}
    )
    assert sorted(target.moved.list_collection_names()) == ["big_places", "bigger_places", "spots"]
    assert target.moved.big_places.count_documents({}) == 100


def test_a_name_taken_by_another_view_is_refused_before_any_write(storage, source, target):
    seed_every_kind(source)
    backup(storage, source)
    target.kinds.command("create", "big_places", viewOn="elsewhere", pipeline=[])
    with pytest.raises(TargetError, match="'kinds.big_places' already exists"):
        restore(storage, target)
    assert sorted(target.kinds.list_collection_names()) == ["big_places"]
    restore(storage, target, "drop")
    assert target.kinds.big_places.count_documents({}) == 100


# ------------------------------------------------------------------ one point in time
class Writer:
    """Changes two collections while a backup reads them, logging each change with the
    cluster time the server gave it; `state_at(t)` is what the collections held at t."""

    def __init__(self, client: Any, seed: int = 7) -> None:
        import random

        self.client = client
        self.random = random.Random(seed)
        self.initial: dict[str, dict[Any, dict[str, Any]]] = {}
        self.log: list[tuple[Any, str, str, Any, Any]] = []  # (time, ns, op, _id, document or None)
        self.next_id = 100_000

    def seed(self, per_collection: int = 1500) -> None:
        for name in ("a", "b"):
            docs = [{"_id": i, "n": i, "pad": "p" * 2000, "tags": [i % 5]} for i in range(per_collection)]
            self.client.pit[name].insert_many(docs)
            self.initial[name] = {d["_id"]: d for d in docs}

    def burst(self, count: int = 12) -> None:
        """Inserts, updates (set, inc, push, unset, replace) and deletes, in both collections."""
        with self.client.start_session(causal_consistency=True) as session:
            for _ in range(count):
                name = self.random.choice("ab")
                coll = self.client.pit[name]
                kind = self.random.choice(["insert", "set", "inc", "push", "unset", "replace", "delete"])
                if kind == "insert":
                    self.next_id += 1
                    doc = {"_id": self.next_id, "n": self.next_id, "pad": "new", "tags": []}
                    coll.insert_one(doc, session=session)
                    key = doc["_id"]
                else:
                    key = self.random.randrange(1500)
                    change = {
                        "set": {"$set": {"n": -key, "deep.x": key}},
                        "inc": {"$inc": {"n": 1000}},
                        "push": {"$push": {"tags": "pushed"}},
                        "unset": {"$unset": {"pad": ""}},
                    }.get(kind)
                    if kind == "delete":
                        coll.delete_one({"_id": key}, session=session)
                    elif kind == "replace":
                        coll.replace_one({"_id": key}, {"replaced": True}, session=session)
                    else:
                        coll.update_one({"_id": key}, change, session=session)
                after = coll.find_one({"_id": key}, session=session)
                self.log.append((session.operation_time, name, kind, key, after))

    def state_at(self, moment: str) -> dict[str, dict[Any, dict[str, Any]]]:
        seconds, increment = (int(x) for x in moment.split("."))
        state = {name: dict(docs) for name, docs in self.initial.items()}
        for when, name, _kind, key, after in self.log:
            if (when.time, when.inc) > (seconds, increment):
                continue
            if after is None:
                state[name].pop(key, None)
            else:
                state[name][key] = after
        return state


def test_a_snapshot_taken_while_a_writer_runs_restores_to_its_cluster_time(storage, source, target):
    writer = Writer(source)
    writer.seed()
    busy = MongoSource("mongo-src", url_of(source), None, ["pit"])
    result = run_backup(busy, storage, KEY, [], [], {}, lambda *_: writer.burst(), _never)
    writer.burst(30)  # after the snapshot: none of this may come back
    moment = result.point_in_time
    assert moment is not None and moment["consistent"] is True and moment["how"].startswith("oplog")
    manifest = json.loads(storage.get_bytes(manifest_key(KEY)))
    assert manifest["point_in_time"] == moment and manifest["oplog"]["items"] > 0

    restored = restore(storage, target)
    assert all(c["ok"] for c in restored.collections.values())  # the copy's counts, checked first
    assert restored.schema is not None and restored.schema["oplog"]["applied"] > 0
    expected = writer.state_at(moment["cluster_time"])
    for name in ("a", "b"):
        found = {d["_id"]: d for d in target.pit[name].find()}
        assert found == expected[name], name
    later = {d["_id"]: d for d in source.pit.a.find()}
    assert later != expected["a"]  # the writer went on: the snapshot is not simply "now"


def test_a_standalone_server_says_its_snapshot_is_not_one_point_in_time(storage):
    from tests.support.mongo import secantus

    with secantus(standalone=True) as url, pymongo.MongoClient(url) as client:
        seed(client)
        result = run_backup(MongoSource("lone", url, None, []), storage, KEY, [], [], {}, _quiet, _never)
    assert result.point_in_time == {
        "consistent": False,
        "how": "a standalone server keeps no oplog: each collection is read as it is then",
    }
    manifest = json.loads(storage.get_bytes(manifest_key(KEY)))
    assert "oplog" not in manifest and manifest["format_version"] == 2  # older readers take it


def test_collections_and_indexes_made_during_the_backup_come_back(storage, source, target):
    writer = Writer(source)
    writer.seed(300)
    done: list[bool] = []

    def during(*_: Any) -> None:
        if not done:
            done.append(True)
            source.pit.create_collection("late", validator={"k": {"$exists": True}})
            source.pit.late.insert_many([{"_id": 1, "k": 1}, {"_id": 2, "k": 2}])
            source.pit.a.create_index([("n", 1)], name="n_1")
            source.pit.b.drop()

    run_backup(
        MongoSource("mongo-src", url_of(source), None, ["pit"]), storage, KEY, [], [], {}, during, _never
    )
    restore(storage, target)
    assert sorted(target.pit.list_collection_names()) == sorted(source.pit.list_collection_names())
    assert canonical(target, "pit.late") == canonical(source, "pit.late")
    assert "n_1" in indexes(target, "pit.a")
    assert "b" not in target.pit.list_collection_names()


def test_the_servers_own_diff_spelling_becomes_updates() -> None:
    """mongod writes updates as version 2 diffs: sets (u), inserts (i), deletes (d), sub-diffs
    (s<field>), and array diffs (a) with new values by index and a new length (l)."""
    from transfer.sources.mongodb.oplog import diff_updates

    diff = {
        "u": {"n": 5},
        "d": {"pad": False},
        "sdeep": {"i": {"x": 1}},
        "stags": {"a": True, "l": 1, "u0": 9},
    }
    assert diff_updates(diff) == [
        {"$push": {"tags": {"$each": [], "$slice": 1}}},
        {"$set": {"n": 5, "deep.x": 1, "tags.0": 9}, "$unset": {"pad": ""}},
    ]
    nested = {"slines": {"a": True, "s1": {"u": {"qty": 3}}, "u2": {"sku": "new"}}}
    assert diff_updates(nested) == [{"$set": {"lines.1.qty": 3, "lines.2": {"sku": "new"}}}]


def test_a_transaction_replays_as_its_operations(target):
    """mongod logs a committed transaction as one applyOps entry; each operation replays."""
    from transfer.sources.mongodb.oplog import Replayer

    target.tx.orders.insert_one({"_id": 1, "n": 1})
    replayer = Replayer(target, lambda ns: ns, "mongo-dst")
    replayer.apply(
        {
            "op": "c",
            "ns": "admin.$cmd",
            "o": {
                "applyOps": [
                    {"op": "i", "ns": "tx.orders", "o": {"_id": 2, "n": 2}},
                    {
                        "op": "u",
                        "ns": "tx.orders",
                        "o2": {"_id": 1},
                        "o": {"$v": 2, "diff": {"u": {"n": 10}}},
                    },
                    {"op": "d", "ns": "tx.other", "o": {"_id": 1}},
                ]
            },
        }
    )
    replayer.finish()  # the document changes go as ordered bulk writes, the last on finish
    assert list(target.tx.orders.find().sort("_id", 1)) == [{"_id": 1, "n": 10}, {"_id": 2, "n": 2}]
    assert replayer.applied == 3
    with pytest.raises(TargetError, match="cannot replay the oplog command 'convertToCapped'"):
        replayer.apply({"op": "c", "ns": "tx.$cmd", "o": {"convertToCapped": "orders", "size": 1}})


def test_a_reclaimed_restore_undoes_what_its_dead_attempt_recorded(storage, source, target):
    seed(source)
    backup(storage, source)
    plans: list[dict[str, Any]] = []
    run_restore(storage, KEY, mongo_target(target), ["shop.orders"], _quiet, _never, on_plan=plans.append)
    assert plans[-1]["created"] == ["shop.orders"]  # recorded before its first document
    target.shop.orders.delete_many({"n": {"$gte": 100}})  # as if the attempt died halfway
    target.shop.create_collection("blobs")  # found empty by the dead attempt, half written
    target.shop.blobs.insert_one({"_id": "half"})
    dead = {"created": ["shop.orders"], "emptied": ["shop.blobs"], "appended": [], "views": []}
    again = run_restore(storage, KEY, mongo_target(target), [], _quiet, _never, resume=dead)
    assert all(c["ok"] for c in again.collections.values())  # existing = fail, and nothing refused
    for ns in ("shop.orders", "shop.blobs"):
        assert docs(target, ns) == docs(source, ns), ns
    appended = {**dead, "appended": ["crm.customers"]}
    with pytest.raises(TargetError, match="appended to 'crm.customers'.*existing = drop"):
        run_restore(storage, KEY, mongo_target(target, "append"), [], _quiet, _never, resume=appended)


def test_a_restore_takes_patterns_and_records_the_names_they_select(
    make_config, client_for, mongo_url, mongo_target_url
):
    from tests.support.api import completed_snapshot, create_policy, wait_for

    with pymongo.MongoClient(mongo_url) as src:
        _fresh(src)
        seed(src)
    config = make_config(
        f'[sources.mongo]\nkind = "mongodb"\nurl = "{mongo_url}"\n'
        f'[targets.mongo_dst]\nkind = "mongodb"\nurl = "{mongo_target_url}"\nexisting = "drop"\n'
    )
    client = client_for(config)
    snap = completed_snapshot(
        client, create_policy(client, "nightly", source="mongo", collections={"exclude": ["shop.b*"]})
    )
    assert sorted(snap["collections"]) == ["crm.café s", "crm.customers", "shop.empty", "shop.orders"]
    r = client.post(
        "/api/v1/restores", json={"snapshot_id": snap["id"], "target": "mongo_dst", "collections": ["crm.*"]}
    )
    assert r.status_code == 202, r.text
    restore = wait_for(
        client, f"/api/v1/restores/{r.json()['id']}", lambda b: b["status"] in ("completed", "failed")
    )
    assert restore["status"] == "completed"
    assert sorted(restore["requested_collections"]) == ["crm.café s", "crm.customers"]
    bad = client.post(
        "/api/v1/restores",
        json={"snapshot_id": snap["id"], "target": "mongo_dst", "collections": ["billing.*"]},
    )
    assert (
        bad.status_code == 404
        and bad.json()["field"] == "collections"
        and "matching 'billing.*'" in bad.json()["error"]
    )


@pytest.mark.parametrize("workers", [1, 4])
def test_insertion_workers_restore_every_document_once(storage, source, target, workers):
    seed(source)
    seed_every_kind(source)
    backup(storage, source)
    mongo = MongoTarget("mongo-dst", url_of(target), None, "fail", insertion_workers=workers)
    result = run_restore(storage, KEY, mongo, [], _quiet, _never)
    assert all(c["ok"] for c in result.collections.values())
    assert canonical(target, "shop.orders") == canonical(source, "shop.orders")
    natural = [d["seq"] for d in source.kinds.capped.find()]
    assert [d["seq"] for d in target.kinds.capped.find()] == natural  # a capped collection: one, ordered


def test_an_insertion_workers_failure_fails_the_restore_and_stops_its_threads(storage, source, target):
    import threading

    seed(source)
    backup(storage, source)
    target.shop.orders.insert_one(
        {"_id": next(iter(source.shop.orders.find().sort("_id", 1).limit(1)))["_id"]}
    )
    mongo = MongoTarget("mongo-dst", url_of(target), None, "append", insertion_workers=4)
    with pytest.raises(TargetError, match="duplicate key|E11000"):
        run_restore(storage, KEY, mongo, ["shop.orders"], _quiet, _never)
    left = [t.name for t in threading.enumerate() if t.name.startswith("insert")]
    assert left == [], left  # no insertion thread outlives the restore


def test_text_and_hashed_indexes_are_made_as_mongorestore_makes_them():
    """SecantusDB refuses text and hashed indexes, so the specs mongod lists are checked here:
    a text index comes back by its fields, not by its internal key."""
    from transfer.sources.mongodb.metadata import index_models as _index_models

    text = {
        "v": 2, "key": {"shop": 1, "_fts": "text", "_ftsx": 1, "year": -1}, "name": "search",
        "weights": {"title": 10, "body": 1}, "default_language": "english", "textIndexVersion": 3,
    }  # fmt: skip
    hashed = {"v": 2, "key": {"customer": "hashed"}, "name": "customer_hashed"}
    made = [m.document for m in _index_models([text, hashed])]
    assert list(made[0]["key"].items()) == [("shop", 1), ("title", "text"), ("body", "text"), ("year", -1)]
    assert made[0]["weights"] == {"title": 10, "body": 1} and made[0]["default_language"] == "english"
    assert made[1] == {"key": {"customer": "hashed"}, "name": "customer_hashed"}


@pytest.mark.parametrize("workers", [1, 3])
def test_validate_applies_the_targets_validators_and_counts_what_they_refuse(
    storage, source, target, workers
):
    seed_every_kind(source)  # kinds.strict: a validator added after ten documents, five break it
    backup(storage, source)
    mongo = MongoTarget("mongo-dst", url_of(target), None, "fail", insertion_workers=workers)
    result = run_restore(storage, KEY, mongo, ["kinds.strict"], _quiet, _never, validate=True)
    assert result.collections["kinds.strict"]["ok"] is True  # refused documents are accounted for
    assert result.schema is not None and result.schema["rejected_by_validator"] == {"kinds.strict": 5}
    assert sorted(d["qty"] for d in target.kinds.strict.find()) == [5, 6, 7, 8, 9]
    target.drop_database("kinds")
    default = run_restore(storage, KEY, mongo_target(target), ["kinds.strict"], _quiet, _never)
    assert "rejected_by_validator" not in (default.schema or {})
    assert target.kinds.strict.count_documents({}) == 10  # bypassed: as they were when taken


def test_a_driver_error_that_repeats_the_password_is_scrubbed():
    from pymongo.errors import PyMongoError

    from transfer.sources.mongodb.connection import redacted

    text = redacted(PyMongoError(f"auth failed for password {SECRET}"), SECRET)
    assert SECRET not in text and text == "PyMongoError: auth failed for password ***"
