"""One point in time for a MongoDB snapshot, as mongodump --oplog and mongorestore
--oplogReplay make it: the oplog position is taken before the first collection is read, the
collections are copied, then the oplog entries written meanwhile are captured; a restore
replays them over the copied collections, which brings every collection to the moment of the
last entry captured (the snapshot's cluster time).

Replaying is idempotent, as the server's own oplog application is: an insert is an upsert of
the whole document, an update sets and unsets paths (or replaces the document), a delete
deletes by _id. So an entry whose effect the copy already holds changes nothing.

The server is not asked to apply the entries (`applyOps`): not every server has it, and each
entry is checked here, for its namespace (selection, renames) and its kind.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, IndexModel, ReplaceOne, UpdateOne

from transfer.errors import SourceError, TargetError
from transfer.sources.mongodb.connection import as_bytes, split_name

RAW = CodecOptions(document_class=RawBSONDocument)
CHUNK = 1 << 20
BULK = 1000  # document changes sent in one ordered bulk write


def cluster_time(ts: Timestamp) -> str:
    """As manifests and records show it: seconds and increment, `1796142873.11`."""
    return f"{ts.time}.{ts.inc}"


def newest(client: Any) -> Timestamp | None:
    """The newest oplog entry's time, exactly: the changes to replay come after it. (A
    server's `hello.lastWrite` is cheaper but need not be an entry's time.)"""
    for entry in client.local["oplog.rs"].find({}, {"ts": 1}).sort("$natural", -1).limit(1):
        found: Timestamp = entry["ts"]
        return found
    return None


def wall_time(entry: Any) -> str:
    """An entry's commit time, ISO 8601 UTC: its wall clock (milliseconds), or its ts's
    second where an older server wrote none."""
    wall = entry.get("wall")
    if isinstance(wall, datetime):
        return (wall if wall.tzinfo else wall.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    ts: Timestamp = entry["ts"]
    return datetime.fromtimestamp(ts.time, UTC).isoformat()


def capture(client: Any, start: Timestamp, databases: list[str]) -> tuple[Timestamp, str, Iterator[bytes]]:
    """The entries after `start` for these databases (and the transactions, whose
    operations are checked one by one on replay), as raw BSON, and the time of the last of
    them: the snapshot's cluster time, the moment these databases are restored to (and
    that entry's wall clock).

    One read of the oplog from `start` on, filtered by the server and kept on local disk.
    `start` is an entry's own time and is asked for too, so finding it first proves the
    oplog did not roll over meanwhile; without it entries are missing and the snapshot
    fails, as mongodump's does."""
    pattern = "^(" + "|".join(re.escape(db) for db in databases) + r")\."
    query = {
        "ts": {"$gte": start},
        "$or": [
            {"ts": start},
            {"ns": {"$regex": pattern}, "op": {"$ne": "n"}},
            {"ns": "admin.$cmd", "o.applyOps": {"$exists": True}},
        ],
    }
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed once read back, or on failure
    end: Timestamp | None = None
    at = ""
    try:
        oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
        with oplog.find(query).sort("$natural", 1) as cursor:
            for entry in cursor:
                ts = entry["ts"]
                if end is None and ts != start:
                    raise SourceError(
                        f"the oplog rolled over while the collections were read (its entry at "
                        f"{cluster_time(start)} is gone): give the oplog more room, or back up less at once"
                    )
                if end is not None:  # the start entry itself is in the copy already
                    spool.write(as_bytes(entry))
                end, at = ts, wall_time(entry)
    except BaseException:
        spool.close()
        raise
    if end is None:
        spool.close()
        raise SourceError(f"the oplog holds no entry at {cluster_time(start)}, where the snapshot began")

    def chunks() -> Iterator[bytes]:
        with spool:
            spool.seek(0)
            while chunk := spool.read(CHUNK):
                yield chunk

    return end, at, chunks()


class Replayer:
    """Applies captured oplog entries to a target, under the restore's selection and renames.

    `place(ns)` answers the target namespace of an archived one, or None when the restore
    leaves it out. Document changes go to the server as ordered bulk writes, one per run
    of entries on the same collection (a command, or another collection, sends what is
    pending first), so the entries apply in oplog order without a round trip each;
    `finish()` sends the last."""

    def __init__(self, client: Any, place: Callable[[str], str | None], target: str) -> None:
        self.client = client
        self.place = place
        self.target = target
        self.applied = 0
        self.skipped = 0
        self.pending: list[Any] = []  # write models for `pending_ns`, in oplog order
        self.pending_ns: str | None = None

    def _queue(self, where: str, models: list[Any]) -> None:
        if where != self.pending_ns or len(self.pending) >= BULK:
            self.flush()
            self.pending_ns = where
        self.pending += models

    def flush(self) -> None:
        if self.pending and self.pending_ns is not None:
            self._collection(self.pending_ns).bulk_write(
                self.pending, ordered=True, bypass_document_validation=True
            )
        self.pending, self.pending_ns = [], None

    def finish(self) -> None:
        self.flush()

    def _rename(self, old: str, new: str, drop_target: bool) -> None:
        """A rename within what is restored is a rename; out of it, a drop (the documents
        leave); into it from outside is refused at capture (capture.unreplayable)."""
        source, to = self.place(old), self.place(new)
        if source is None and to is None:
            self.skipped += 1
            return
        if to is None:
            self._collection(source or old).drop()
        elif source is None:
            raise TargetError(f"target {self.target!r}: {new} was renamed from {old}, which is not restored")
        else:
            self.client.admin.command("renameCollection", source, to=to, dropTarget=drop_target)
        self.applied += 1

    def _collection(self, ns: str) -> Any:
        db, coll = split_name(ns)
        return self.client.get_database(db).get_collection(coll)

    def apply(self, entry: dict[str, Any]) -> None:
        op, ns = entry.get("op"), str(entry.get("ns", ""))
        if op == "n":
            return
        if op == "c":
            self._command(ns, entry["o"])
            return
        where = self.place(ns)
        if where is None:
            self.skipped += 1
            return
        if op == "i":
            doc = entry["o"]
            models: list[Any] = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)]
        elif op == "u":
            models = update_models(entry["o2"], entry["o"])
        elif op == "d":
            models = [DeleteOne(entry["o"])]
        else:
            raise TargetError(f"target {self.target!r}: cannot replay oplog entry of kind {op!r} on {ns}")
        self._queue(where, models)
        self.applied += 1

    def _command(self, ns: str, o: dict[str, Any]) -> None:
        db, _ = split_name(ns)
        if "applyOps" not in o:
            self.flush()  # the documents changed before the command, before it
        if "applyOps" in o:  # a transaction: its operations, in order
            for inner in o["applyOps"]:
                self.apply(inner)
            return
        name = next(iter(o))
        if name in UNCOUNTED_COMMANDS:  # markers: the operations they frame are entries of their own
            return
        if name == "dropDatabase":  # logged after a drop of each of its collections, replayed above
            self.skipped += 1
            return
        if name == "renameCollection":
            self._rename(str(o[name]), str(o["to"]), bool(o.get("dropTarget")))
            return
        where = self.place(f"{db}.{o[name]}")
        if where is None:
            self.skipped += 1
            return
        target_db, target_coll = split_name(where)
        database = self.client.get_database(target_db)
        options = {k: v for k, v in o.items() if k not in (name, "idIndex")}
        if name == "create":
            if not list(database.list_collections(filter={"name": target_coll})):
                database.command({"create": target_coll, **options})
        elif name == "drop":
            database.drop_collection(target_coll)
        elif name == "collMod":
            database.command({"collMod": target_coll, **options})
        elif name in ("createIndexes", "commitIndexBuild"):  # one spec (mongod's entry) or a list of them
            specs = options["indexes"] if "indexes" in options else [options]
            database.get_collection(target_coll).create_indexes([_index_model(spec) for spec in specs])
        elif name == "dropIndexes":
            index = o.get("index")
            if index and index in {i["name"] for i in database.get_collection(target_coll).list_indexes()}:
                database.get_collection(target_coll).drop_index(index)
        else:
            raise TargetError(f"target {self.target!r}: cannot replay the oplog command {name!r} on {ns}")
        self.applied += 1


# Commands the Replayer applies (or, for markers, passes over); any other ends a capture window.
UNCOUNTED_COMMANDS = ("commitTransaction", "abortTransaction", "startIndexBuild", "abortIndexBuild")
KNOWN_COMMANDS = frozenset(
    {"applyOps", "dropDatabase", "renameCollection", "create", "drop", "collMod", "createIndexes",
     "commitIndexBuild", "dropIndexes", *UNCOUNTED_COMMANDS}
)  # fmt: skip


def replayable(entry: dict[str, Any]) -> int:
    """How many changes the Replayer counts for this entry, applied or skipped: what a
    segment's `items` promise and a replay's count is checked against."""
    op, o = entry.get("op"), entry.get("o") or {}
    if op == "n":
        return 0
    if op == "c":
        if "applyOps" in o:
            return sum(replayable(inner) for inner in o["applyOps"])
        return 0 if next(iter(o), None) in UNCOUNTED_COMMANDS else 1
    return 1


def update_models(selector: dict[str, Any], change: dict[str, Any]) -> list[Any]:
    """An update entry as write models: a replacement, or the sets and unsets its diff
    (or version 1 modifiers) stand for."""
    if change.get("$v") == 2 and "diff" in change:
        steps = diff_updates(change["diff"])
    elif any(k.startswith("$") for k in change):
        steps = [{k: v for k, v in change.items() if k != "$v"}]  # version 1 modifiers
    else:
        return [ReplaceOne(selector, change, upsert=True)]
    return [UpdateOne(selector, step) for step in steps if step]


def _index_model(spec: dict[str, Any]) -> IndexModel:
    spec = {k: v for k, v in spec.items() if k not in INTERNAL_INDEX_FIELDS}
    return IndexModel(list(spec.pop("key").items()), **spec)


INTERNAL_INDEX_FIELDS = ("v", "ns", "background", "entryFormat")  # the server's own, not options


def diff_updates(diff: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """An update's version 2 diff as update documents, applied in order: array truncations
    first, then the sets and unsets. Two spellings exist: the server's (`u`, `i`, `d`,
    `s<field>` for a sub-diff, `a` marking an array diff with `u<index>`, `s<index>` and `l`
    for its new length) and the flat one some servers write (`updatedFields`,
    `removedFields`, `truncatedArrays`)."""
    truncate: dict[str, Any] = {}
    sets: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    if "updatedFields" in diff or "removedFields" in diff or "truncatedArrays" in diff:
        sets.update({prefix + k: v for k, v in (diff.get("updatedFields") or {}).items()})
        unsets.update({prefix + k: "" for k in diff.get("removedFields") or []})
        for t in diff.get("truncatedArrays") or []:
            truncate[prefix + t["field"]] = {"$each": [], "$slice": int(t["newSize"])}
    else:
        _walk(diff, prefix, truncate, sets, unsets)
    out: list[dict[str, Any]] = []
    if truncate:
        out.append({"$push": truncate})
    step: dict[str, Any] = {}
    if sets:
        step["$set"] = sets
    if unsets:
        step["$unset"] = unsets
    if step:
        out.append(step)
    return out


def _walk(
    diff: dict[str, Any], prefix: str, truncate: dict[str, Any], sets: dict[str, Any], unsets: dict[str, Any]
) -> None:
    is_array = diff.get("a") is True
    for key, value in diff.items():
        if key == "a":
            continue
        if is_array:
            if key == "l":
                truncate[prefix.rstrip(".")] = {"$each": [], "$slice": int(value)}
            elif key.startswith("u"):
                sets[f"{prefix}{key[1:]}"] = value
            elif key.startswith("s"):
                _walk(value, f"{prefix}{key[1:]}.", truncate, sets, unsets)
            continue
        if key in ("u", "i"):
            sets.update({prefix + k: v for k, v in value.items()})
        elif key == "d":
            unsets.update({prefix + k: "" for k in value})
        elif key.startswith("s"):
            _walk(value, f"{prefix}{key[1:]}.", truncate, sets, unsets)
