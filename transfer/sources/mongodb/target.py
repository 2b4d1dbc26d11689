"""MongoDB as a restore target: collections created with their options and indexes from
mongodump's metadata, documents inserted as raw BSON in batches.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo import IndexModel, MongoClient
from pymongo.errors import PyMongoError

from transfer.errors import TargetError
from transfer.sources.mongodb import auth, oplog
from transfer.sources.mongodb.connection import (
    ClientFactory,
    connect,
    log,
    redacted,
    split_name,
)
from transfer.sources.mongodb.metadata import index_models, parse_metadata
from transfer.sources.mongodb.writer import BsonWriter
from transfer.storage.base import Partial

EXISTING = ("fail", "drop", "append")  # what a restore does with a collection already there


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
        insertion_workers: int = 1,
        users_and_roles: bool = False,
    ) -> None:
        if existing not in EXISTING:
            raise ValueError(f"target {name!r}: existing must be one of {', '.join(EXISTING)}")
        self.name = name
        self.url = url
        self._password = password
        self.existing = existing
        self.client_factory = client_factory
        self.insertion_workers = insertion_workers  # per collection, as mongorestore's
        # mongorestore --restoreDbUsersAndRoles: the snapshot's users and roles come too. A
        # setting of the target, as its owner decides whether another place's logins belong.
        self.users_and_roles = users_and_roles

    def __repr__(self) -> str:
        return f"MongoTarget({self.name!r}, existing={self.existing!r})"

    def cleanup_partials(self) -> int:
        return 0  # documents land in place, never in files aside: there is nothing to remove

    def list_partials(self) -> list[Partial]:
        return []  # documents land in place: nothing is written aside

    def remove_partial(self, partial: Partial) -> bool:
        return False

    def replay(
        self, transactions: Iterable[Any], selection: list[str], mapping: dict[str, str], databases: list[str]
    ) -> oplog.Replayer:
        """A capture's oplog entries, after a restore to a moment restored its snapshot:
        each namespace placed as the restore placed the snapshot's (`selection` and
        `mapping`), none of a database the capture did not read (`databases`; empty: every
        one but the server's own)."""
        wanted = set(selection)

        def place(ns: str) -> str | None:
            db, _ = split_name(ns)
            if (db not in databases) if databases else db in ("admin", "local", "config"):
                return None
            if wanted and ns not in wanted:
                return None
            return mapping.get(ns, ns)

        client = connect(self.client_factory, self.url, self._password)
        try:
            replayer = oplog.Replayer(client, place, self.name)
            for txn in transactions:
                for entry in txn.changes:
                    replayer.apply(entry)
            replayer.finish()
            return replayer
        except PyMongoError as e:
            raise TargetError(f"target {self.name!r}: {redacted(e, self._password)}") from None
        finally:
            client.close()

    @contextmanager
    def open(
        self,
        source_kind: str,
        existing: str | None = None,
        *,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
        validate: bool = False,
        **_: Any,
    ) -> Iterator[_MongoRestore]:
        """`existing` overrides the configured policy for this restore. `on_plan` records
        what the restore is about to change, before it writes; `resume` is what a dead
        attempt recorded, undone first."""
        if source_kind != "mongodb":
            raise TargetError(f"target {self.name!r} takes MongoDB snapshots, not {source_kind}")
        policy = existing or self.existing
        if policy not in EXISTING:
            raise TargetError(f"target {self.name!r}: existing must be one of {', '.join(EXISTING)}")
        client = connect(self.client_factory, self.url, self._password)
        session = _MongoRestore(self, client, policy, on_plan or (lambda facts: None), resume)
        session.validate = validate
        try:
            yield session
        except BaseException as e:
            session.rollback()
            if isinstance(e, PyMongoError):
                raise TargetError(f"target {self.name!r}: {redacted(e, self._password)}") from None
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
    options: dict[str, Any] = field(default_factory=dict)  # the collection's, as archived


class _MongoRestore:
    def __init__(
        self,
        target: MongoTarget,
        client: Any,
        existing: str,
        on_plan: Callable[[dict[str, Any]], None],
        resume: dict[str, Any] | None,
    ) -> None:
        self.target = target
        self.client = client
        self.existing = existing
        self.on_plan = on_plan
        self.resume = resume
        # What this attempt changes, recorded before it writes, so that an attempt claimed
        # after this one died can undo it: collections and views it created, collections
        # it found empty, collections it appended to (which nothing can undo).
        self.plan: dict[str, list[str]] = {"created": [], "emptied": [], "appended": [], "views": []}
        self.auth = auth.AuthRestore(target.name, {})  # the snapshot's users and roles
        self.validate = False  # True: the target's validators apply (and refused documents are counted)
        self.rejected: dict[str, int] = {}  # per archived collection, when validating
        self.prepared: dict[str, _Prepared] = {}  # by archived collection name
        self.views: dict[str, dict[str, Any]] = {}  # target "<db>.<view>": its options
        self.created_views: list[str] = []  # dropped again if the restore fails
        self.selection: set[str] = set()  # archived collections restored; empty: all of them
        self.mapping: dict[str, str] = {}
        self.changes: Any = None  # a temporary file of the oplog entries to replay on commit
        self.replayed: oplog.Replayer | None = None
        self.committed = False

    def begin(
        self,
        schema: dict[str, bytes],
        selection: list[str] | None = None,
        mapping: dict[str, str] | None = None,
    ) -> None:
        """Views: each goes where the collection it reads from goes (renamed with it), and
        is created once the data is in (`commit`); one whose collection is not restored is
        left out. Collections are prepared one by one, with their own metadata."""
        if self.resume:
            self._undo(self.resume)
        wanted = set(selection or [])
        mapping = mapping or {}
        self.selection, self.mapping = wanted, dict(mapping)
        definitions = {
            name: parse_metadata(name, data) for name, data in schema.items() if not auth.is_auth_member(name)
        }
        self.auth = auth.AuthRestore(self.target.name, schema)
        if self.auth and self.target.users_and_roles:
            self.auth.restricted({split_name(n)[0] for n in wanted} if wanted else None, mapping)
            self.auth.check(self.client, self.existing)

        def placed(name: str, seen: frozenset[str] = frozenset()) -> tuple[str, str] | None:
            """(target db, target collection) of what the view `name` reads from, or None."""
            db, _view = split_name(name)
            source = f"{db}.{definitions[name]['options'].get('viewOn', '')}"
            if source in definitions and source not in seen:
                upstream = placed(source, seen | {name})
                return (
                    None if upstream is None else (upstream[0], mapping.get(source, source).partition(".")[2])
                )
            if wanted and source not in wanted:
                return None
            return split_name(mapping.get(source, source))

        for name, meta in sorted(definitions.items()):
            where = placed(name)
            if where is None:
                continue
            options = dict(meta.get("options") or {})
            target_db, on = where
            options["viewOn"] = on
            self.views[f"{target_db}.{split_name(name)[1]}"] = options
        for name in self.views:
            self._check_free(name)

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
        meta = parse_metadata(collection, definition)
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
            indexes=index_models(meta.get("indexes") or []),
            options=dict(meta.get("options") or {}),
        )
        kind = "created" if not exists else "emptied" if empty else "appended"
        self.plan[kind].append(name)
        self.on_plan({k: list(v) for k, v in self.plan.items()})  # before the first document

    def _undo(self, dead: dict[str, Any]) -> None:
        """What a dead attempt of this restore left, so this one starts as it did. Documents
        it appended to a collection that held others cannot be told apart: refused."""
        appended = list(dead.get("appended") or [])
        if appended:
            raise TargetError(
                f"target {self.target.name!r}: an earlier attempt of this restore appended to "
                f"{appended[0]!r} before it died, and its documents cannot be told from the others; "
                "restore again with existing = drop"
            )
        auth.undo(self.client, list(dead.get("auth") or []))
        for name in [*(dead.get("views") or []), *(dead.get("created") or [])]:
            self._collection(name).drop()
        for name in dead.get("emptied") or []:
            self._collection(name).delete_many({})

    @contextmanager
    def open_out(self, collection: str) -> Iterator[BsonWriter]:
        prepared = self.prepared[collection]
        target = self._collection(prepared.name)
        capped = bool(prepared.options.get("capped"))  # natural order: one ordered inserter
        workers = 1 if capped else self.target.insertion_workers
        writer = BsonWriter(collection, target, workers, validate=self.validate)
        try:
            yield writer
            writer.close()
        finally:
            writer.abandon()
        if writer.rejected:
            self.rejected[collection] = writer.rejected
        if prepared.indexes:
            target.create_indexes(prepared.indexes)

    @contextmanager
    def open_changes(self) -> Iterator[Any]:
        """The changes made while the snapshot was read, kept aside (on disk) until the
        counts of the copied collections are checked; commit() replays them."""
        self.changes = tempfile.TemporaryFile()  # noqa: SIM115 - closed in commit or rollback
        yield self.changes

    def _place(self, ns: str) -> str | None:
        """Where an archived namespace goes: renamed as the restore maps it; None when the
        restore leaves it out (a selection that does not name it)."""
        if ns in self.prepared:
            return self.prepared[ns].name
        if self.selection:
            return None
        return self.mapping.get(ns, ns)

    def _replay(self) -> None:
        if self.changes is None:
            return
        replayer = oplog.Replayer(self.client, self._place, self.target.name)
        self.changes.seek(0)
        for entry in bson.decode_file_iter(self.changes):
            replayer.apply(entry)
        replayer.finish()
        self.changes.close()
        self.changes = None
        self.replayed = replayer

    def count_items(self, collection: str) -> int:
        """Reads the target itself; documents that were there before do not count, and
        documents the target's validator refused (validate on) count as handled: they are
        reported by number, not lost unseen."""
        prepared = self.prepared.get(collection)
        if prepared is None:
            return 0
        total: int = self._collection(prepared.name).count_documents({})
        return total - prepared.baseline + self.rejected.get(collection, 0)

    def _check_free(self, name: str) -> None:
        """A view's name under the existing policy: taken by a collection, it is refused;
        taken by a view, "drop" replaces it and "fail" and "append" refuse it."""
        db, view = split_name(name)
        found = list(self.client.get_database(db).list_collections(filter={"name": view}))
        if not found:
            return
        if self.existing == "drop" and found[0].get("type") == "view":
            return
        raise TargetError(
            f"target {self.target.name!r}: {name!r} already exists (a view of the snapshot is named so)"
        )

    def _create_views(self) -> None:
        if self.views:
            self.plan["views"] = sorted(self.views)
            self.on_plan({k: list(v) for k, v in self.plan.items()})
        for name, options in sorted(self.views.items()):
            db_name, view = split_name(name)
            database = self.client.get_database(db_name)
            if list(database.list_collections(filter={"name": view, "type": "view"})):
                database.drop_collection(view)  # "drop" only: _check_free refused the others
            database.command({"create": view, **options})
            self.created_views.append(name)

    def commit(self) -> None:
        """Writes are already durable in place: committing creates the views, replays the
        changes made while the snapshot was read (collections and views reach its cluster
        time: a view changed meanwhile is changed again), then disarms the rollback."""
        self._create_views()
        self._replay()
        if self.auth and self.target.users_and_roles:
            self.plan["auth"] = self.auth.planned()
            self.on_plan({k: list(v) for k, v in self.plan.items()})
            self.auth.apply(self.client, uuid.uuid4().hex[:12])
        self.committed = True

    def schema_notes(self) -> dict[str, Any] | None:
        """The oplog replayed on commit, where the snapshot had one."""
        notes: dict[str, Any] = {}
        if self.replayed is not None:
            notes["oplog"] = {"applied": self.replayed.applied, "skipped": self.replayed.skipped}
        if self.rejected:
            notes["rejected_by_validator"] = dict(self.rejected)
        if self.auth:
            restored = self.target.users_and_roles
            notes["users_and_roles"] = {**self.auth.counts(), "restored": restored}
            if not restored:
                notes["users_and_roles"]["reason"] = "the target's users_and_roles setting is off"
        return notes or None

    def rollback(self) -> None:
        if self.changes is not None:
            self.changes.close()
            self.changes = None
        if self.committed:
            return
        try:
            auth.undo(self.client, self.auth.created)
        except Exception:  # keep the restore's own error; this one is only logged
            log.warning("could not drop the users and roles a failed restore created")
        for name in self.created_views:
            try:
                self._collection(name).drop()
            except Exception:  # keep the restore's own error; this one is only logged
                log.warning("could not drop view %s after a failed restore", name)
        for prepared in self.prepared.values():
            try:
                if prepared.fresh:
                    self._collection(prepared.name).drop()
                elif prepared.was_empty:
                    self._collection(prepared.name).delete_many({})
            except Exception:  # keep the restore's own error; this one is only logged
                log.warning("could not undo collection %s after a failed restore", prepared.name)
