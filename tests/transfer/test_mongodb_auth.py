"""A database's users and roles, on request (mongodump --dumpDbUsersAndRoles, mongorestore
--restoreDbUsersAndRoles), against the same real servers as tests/transfer/test_mongodb.py.

SecantusDB has no `_mergeAuthzCollections`, the only way a server takes a user with its
credentials: there, a restore of users is refused before any write, and the test of that
refusal runs; against a mongod (SNAPLEDGER_TEST_MONGODB_TARGET_URL) the same test checks
the users arrive with their credentials instead.
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from pymongo.errors import OperationFailure

from tests.transfer.test_mongodb import _never, _quiet, url_of
from transfer.errors import TargetError
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.sources.mongodb.auth import AuthRestore, _inheritance_order, can_merge
from transfer.sources.mongodb.source import MongoSource
from transfer.sources.mongodb.target import MongoTarget
from transfer.storage import LocalStorage
from transfer.storage.layout import manifest_key

KEY = "nightly/auth-1.tar"
PASSWORD = "pw-Very-s3cret-login"
USERS = "dump/shop/$admin.system.users.bson.gz"
ROLES = "dump/shop/$admin.system.roles.bson.gz"


def _fresh(client: Any) -> Any:
    for db in ("shop", "crm", "elsewhere"):
        client.drop_database(db)
        client[db].command({"dropAllUsersFromDatabase": 1})
        client[db].command({"dropAllRolesFromDatabase": 1})
    return client


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage("local", tmp_path / "store")


@pytest.fixture
def source(mongo_url: str) -> Iterator[Any]:
    with pymongo.MongoClient(mongo_url) as client:
        yield _fresh(client)
        _fresh(client)


@pytest.fixture
def target(mongo_target_url: str) -> Iterator[Any]:
    with pymongo.MongoClient(mongo_target_url) as client:
        yield _fresh(client)
        _fresh(client)


def _seed(client: Any, users: bool = True) -> None:
    shop = client.shop
    shop.orders.insert_many([{"_id": i, "n": i} for i in range(20)])
    # "clerk" inherits "viewer", created after it: a restore must create viewer first.
    shop.command(
        {
            "createRole": "viewer",
            "privileges": [{"resource": {"db": "shop", "collection": "orders"}, "actions": ["find"]}],
            "roles": [],
        }
    )
    shop.command(
        {
            "createRole": "clerk",
            "privileges": [{"resource": {"db": "shop", "collection": ""}, "actions": ["insert", "update"]}],
            "roles": ["viewer", {"role": "read", "db": "shop"}],
        }
    )
    if users:
        shop.command(
            {"createUser": "alice", "pwd": PASSWORD, "roles": ["clerk"], "customData": {"team": "ops"}}
        )


def _backup(storage: LocalStorage, client: Any, users_and_roles: bool = True) -> None:
    source = MongoSource("mongo-src", url_of(client), None, ["shop"], users_and_roles=users_and_roles)
    run_backup(source, storage, KEY, [], [], {"policy": "nightly"}, _quiet, _never)


def _restore(
    storage: LocalStorage, client: Any, users_and_roles: bool = True, existing: str = "fail", **kw: Any
):
    target = MongoTarget("mongo-dst", url_of(client), None, existing, users_and_roles=users_and_roles)
    return run_restore(storage, KEY, target, [], _quiet, _never, **kw)


def _members(storage: LocalStorage) -> dict[str, bytes]:
    with tarfile.open(storage.root / KEY) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _roles(client: Any) -> list[dict[str, Any]]:
    found = client.shop.command({"rolesInfo": 1, "showPrivileges": True, "showBuiltinRoles": False})["roles"]
    keep = ("role", "db", "privileges", "roles")
    return sorted(({k: r.get(k) for k in keep} for r in found), key=lambda r: r["role"])


def test_users_and_roles_are_archived_on_request_as_mongodump_lays_them_out(storage, source):
    _seed(source)
    _backup(storage, source, users_and_roles=False)
    assert USERS not in _members(storage) and ROLES not in _members(storage)

    _backup(storage, source)
    members = _members(storage)
    users = bson.decode_all(gzip.decompress(members[USERS]))
    roles = bson.decode_all(gzip.decompress(members[ROLES]))
    assert [(u["_id"], u["user"], u["db"]) for u in users] == [("shop.alice", "alice", "shop")]
    assert users[0]["credentials"]["SCRAM-SHA-256"]["storedKey"]  # they log in with the same password
    info = source.shop.command({"usersInfo": "alice", "showCredentials": True, "showCustomData": True})
    kept = {k: v for k, v in info["users"][0].items() if k != "mechanisms"}  # the server derives it
    assert users[0] == {**kept, "_id": "shop.alice"}  # roles, credentials, customData where kept
    assert sorted(r["_id"] for r in roles) == ["shop.clerk", "shop.viewer"]
    # The password hashes stay in their member: not in the manifest, which events and the
    # API repeat.
    stored_key = users[0]["credentials"]["SCRAM-SHA-256"]["storedKey"].encode()
    manifest = (storage.root / manifest_key(KEY)).read_bytes()
    assert stored_key not in manifest and PASSWORD.encode() not in manifest
    assert USERS in manifest.decode()  # checksummed like any schema member


def test_roles_come_back_on_request_each_after_the_roles_it_inherits(storage, source, target):
    _seed(source, users=False)
    _backup(storage, source)

    off = _restore(storage, target, users_and_roles=False)
    assert _roles(target) == []
    assert off.schema is not None
    assert off.schema["users_and_roles"] == {
        "users": 0,
        "roles": 2,
        "restored": False,
        "reason": "the target's users_and_roles setting is off",
    }

    on = _restore(storage, target, existing="drop")
    assert _roles(target) == _roles(source)
    assert on.schema is not None and on.schema["users_and_roles"]["restored"] is True


def test_a_role_already_there_is_refused_before_any_write_unless_existing_is_drop(storage, source, target):
    _seed(source, users=False)
    _backup(storage, source)
    target.shop.command({"createRole": "viewer", "privileges": [], "roles": []})
    with pytest.raises(TargetError, match="role 'viewer' already exists in database 'shop'.*existing = drop"):
        _restore(storage, target)
    assert "orders" not in target.shop.list_collection_names()  # refused before the first write
    _restore(storage, target, existing="drop")
    assert _roles(target) == _roles(source)


def test_users_come_with_their_credentials_or_the_restore_is_refused_before_any_write(
    storage, source, target
):
    _seed(source)
    _backup(storage, source)
    if can_merge(target) != "yes":  # SecantusDB: createUser takes clear-text passwords only
        with pytest.raises(
            TargetError, match="cannot restore users with their credentials.*_mergeAuthzCollections"
        ):
            _restore(storage, target)
        assert "orders" not in target.shop.list_collection_names()
        assert _roles(target) == []
        _restore(storage, target, users_and_roles=False)  # the data alone is fine
        assert target.shop.orders.count_documents({}) == 20
        return
    _restore(storage, target)
    info = target.shop.command({"usersInfo": "alice", "showCredentials": True})["users"][0]
    source_info = source.shop.command({"usersInfo": "alice", "showCredentials": True})["users"][0]
    assert info["credentials"] == source_info["credentials"]
    assert info["roles"] == source_info["roles"]


def test_users_and_roles_do_not_follow_a_renamed_database(storage, source, target):
    _seed(source, users=False)
    _backup(storage, source)
    target_ = MongoTarget("mongo-dst", url_of(target), None, "fail", users_and_roles=True)
    with pytest.raises(
        TargetError, match="users and roles of database 'shop' cannot follow it to 'elsewhere'"
    ):
        run_restore(storage, KEY, target_, [], _quiet, _never, mapping={"shop.orders": "elsewhere.orders"})
    assert "orders" not in target.elsewhere.list_collection_names()


def test_a_reclaimed_restore_drops_the_roles_its_dead_attempt_made(storage, source, target):
    _seed(source, users=False)
    _backup(storage, source)
    plans: list[dict[str, Any]] = []
    _restore(storage, target, on_plan=plans.append)
    assert plans[-1]["auth"] == ["role:shop.clerk", "role:shop.viewer"]  # recorded before they were made
    target.shop.orders.delete_many({"n": {"$gte": 5}})  # as if the attempt died after its roles
    _restore(storage, target, resume=plans[-1])  # existing = fail: nothing of the dead attempt is left
    assert _roles(target) == _roles(source)
    assert target.shop.orders.count_documents({}) == 20


def test_a_failed_restore_drops_the_roles_it_made(storage, source, target, monkeypatch):
    _seed(source, users=False)
    _backup(storage, source)
    made = AuthRestore.apply

    def then_fail(self: AuthRestore, client: Any, run_tag: str) -> None:
        made(self, client, run_tag)
        assert len(_roles(client)) == 2
        raise OperationFailure("the server went away after the roles", 91)

    monkeypatch.setattr(AuthRestore, "apply", then_fail)
    with pytest.raises(TargetError, match="went away after the roles"):
        _restore(storage, target)
    assert _roles(target) == []
    assert "orders" not in target.shop.list_collection_names()


def test_roles_are_made_after_the_roles_of_their_database_they_inherit():
    # SecantusDB takes a grant of a role that does not exist yet; mongod refuses it, so the
    # order is checked here on its own.
    docs = [
        {"role": "a_top", "roles": ["m_mid", {"role": "read", "db": "shop"}]},
        {"role": "m_mid", "roles": [{"role": "z_base", "db": "shop"}, {"role": "z_base", "db": "other"}]},
        {"role": "z_base", "roles": []},
        {"role": "loop_a", "roles": ["loop_b"]},
        {"role": "loop_b", "roles": ["loop_a"]},  # the server refuses cycles; the order still ends
    ]
    order = [d["role"] for d in _inheritance_order("shop", docs)]
    assert order.index("z_base") < order.index("m_mid") < order.index("a_top")
    assert sorted(order) == sorted(d["role"] for d in docs)
