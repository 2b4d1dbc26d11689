"""A database's users and roles, on request, as mongodump --dumpDbUsersAndRoles and
mongorestore --restoreDbUsersAndRoles move them.

A backup asked for them reads each database's users (with their SCRAM credentials, so they
log in again with the same passwords) and its user-defined roles, and archives them as
`dump/<db>/$admin.system.users.bson.gz` and `$admin.system.roles.bson.gz`: documents shaped
as `admin.system.users` / `admin.system.roles` hold them. The credentials are password
hashes: they go only into the archive (encrypted where the storage location is), never into
the manifest, an event or a log line.

A restore asked for them creates the roles with `createRole` (any server), in an order where
a role comes after the roles of its database it inherits, and the users with their
credentials through `_mergeAuthzCollections`, the server's own command for it (mongorestore's
way: `createUser` takes only a clear-text password). A server without that command gets no
users: the restore is refused before it writes anything, with the reason.
"""

from __future__ import annotations

from typing import Any

import bson
from pymongo.errors import OperationFailure

from transfer.errors import TargetError
from transfer.sources.mongodb.connection import split_name

USERS = "$admin.system.users"
ROLES = "$admin.system.roles"
KINDS = (USERS, ROLES)
COMMAND_NOT_FOUND = 59
ROLE_NOT_FOUND = 31
USER_NOT_FOUND = 11
UNAUTHORIZED = 13
# What usersInfo / rolesInfo add that admin.system.users / admin.system.roles do not hold.
_DERIVED = (
    "mechanisms",
    "inheritedRoles",
    "inheritedPrivileges",
    "isBuiltin",
    "inheritedAuthenticationRestrictions",
)


def is_auth_member(name: str) -> bool:
    """Whether a schema member named "<db>.<what>" holds users or roles, not a view."""
    return name.partition(".")[2] in KINDS


def read(database: Any) -> list[tuple[str, bytes]]:
    """The database's users and roles as schema members ("<db>.$admin.system.users" and
    "<db>.$admin.system.roles"), concatenated BSON; a database with neither gives none."""
    users = database.command({"usersInfo": 1, "showCredentials": True, "showCustomData": True})["users"]
    roles = database.command({"rolesInfo": 1, "showPrivileges": True, "showBuiltinRoles": False})["roles"]
    members = []
    for kind, found, key in ((USERS, users, "user"), (ROLES, roles, "role")):
        docs = []
        for doc in sorted(found, key=lambda d: str(d[key])):
            kept = {k: v for k, v in doc.items() if k not in _DERIVED}
            kept["_id"] = f"{doc['db']}.{doc[key]}"
            docs.append(bson.encode(kept))
        if docs:
            members.append((f"{database.name}.{kind}", b"".join(docs)))
    return members


def can_merge(client: Any) -> str:
    """Whether the server takes users with their credentials: "yes", "missing" (no
    _mergeAuthzCollections) or "refused" (this user may not). Asked with empty names, which
    a server that has the command refuses as a bad value."""
    try:
        client.admin.command(
            {
                "_mergeAuthzCollections": 1,
                "tempUsersCollection": "",
                "tempRolesCollection": "",
                "db": "",
                "drop": False,
            }
        )
    except OperationFailure as e:
        if e.code == COMMAND_NOT_FOUND:
            return "missing"
        if e.code == UNAUTHORIZED:
            return "refused"
    return "yes"


def _decode(name: str, data: bytes) -> list[dict[str, Any]]:
    from transfer.archive.format import ArchiveError

    try:
        return list(bson.decode_all(data))
    except Exception:  # noqa: BLE001 - whatever bson says, the member is damaged
        raise ArchiveError(f"schema member {name!r} is not readable BSON") from None


class AuthRestore:
    """The users and roles of a snapshot, checked against the target in `check` (before the
    first write) and created in `apply` (after the data, as mongorestore does)."""

    def __init__(self, target_name: str, schema: dict[str, bytes]) -> None:
        self.target_name = target_name
        self.users: dict[str, list[dict[str, Any]]] = {}  # by database
        self.roles: dict[str, list[dict[str, Any]]] = {}
        for name, data in sorted(schema.items()):
            if is_auth_member(name):
                db, kind = split_name(name)
                (self.users if kind == USERS else self.roles)[db] = _decode(name, data)
        self.created: list[str] = []  # "role:<db>.<name>" / "user:<db>.<name>", undone on failure

    def __bool__(self) -> bool:
        return bool(self.users or self.roles)

    def counts(self) -> dict[str, int]:
        return {
            "users": sum(len(v) for v in self.users.values()),
            "roles": sum(len(v) for v in self.roles.values()),
        }

    def restricted(self, wanted_dbs: set[str] | None, mapping: dict[str, str]) -> None:
        """Keeps the databases the restore writes; a database it renames is refused, as its
        users' and roles' names and grants name the database they were made in."""
        for found in (self.users, self.roles):
            for db in list(found):
                if wanted_dbs is not None and db not in wanted_dbs:
                    del found[db]
        for source, target in mapping.items():
            source_db, target_db = source.partition(".")[0], target.partition(".")[0]
            if source_db != target_db and (source_db in self.users or source_db in self.roles):
                raise TargetError(
                    f"target {self.target_name!r}: users and roles of database {source_db!r} cannot "
                    f"follow it to {target_db!r}; restore it under its own name, or turn "
                    "users_and_roles off for this target"
                )

    def check(self, client: Any, existing: str) -> None:
        """Before anything is written: the server can take the users with their credentials,
        and the names are free, or the existing policy is "drop"."""
        if self.users:
            found = can_merge(client)
            if found == "missing":
                raise TargetError(
                    f"target {self.target_name!r}: the server cannot restore users with their "
                    "credentials (it has no _mergeAuthzCollections command); turn "
                    "users_and_roles off for this target and create the users by hand"
                )
            if found == "refused":
                raise TargetError(
                    f"target {self.target_name!r}: its user may not restore users and roles "
                    "(it needs the restore role on admin)"
                )
        if existing == "drop":
            return
        for db, docs, key, info in self._each(client):
            present = {d[key] for d in info}
            for doc in docs:
                if doc[key] in present:
                    raise TargetError(
                        f"target {self.target_name!r}: {key} {doc[key]!r} already exists in "
                        f"database {db!r} (choose existing = drop to replace it)"
                    )

    def _each(self, client: Any) -> list[tuple[str, list[dict[str, Any]], str, list[dict[str, Any]]]]:
        out = []
        for db, docs in self.roles.items():
            info = client.get_database(db).command({"rolesInfo": 1, "showBuiltinRoles": False})["roles"]
            out.append((db, docs, "role", info))
        for db, docs in self.users.items():
            out.append((db, docs, "user", client.get_database(db).command({"usersInfo": 1})["users"]))
        return out

    def planned(self) -> list[str]:
        return sorted(
            [f"role:{db}.{d['role']}" for db, docs in self.roles.items() for d in docs]
            + [f"user:{db}.{d['user']}" for db, docs in self.users.items() for d in docs]
        )

    def apply(self, client: Any, run_tag: str) -> None:
        """Roles first (users are granted them), each after the roles it inherits; then the
        users through temporary collections merged by the server. The caller records
        `planned()` first, so an attempt that dies here is undone by the next one."""
        for db, docs in sorted(self.roles.items()):
            database = client.get_database(db)
            for doc in _inheritance_order(db, docs):
                _drop(database, "dropRole", doc["role"], ROLE_NOT_FOUND)
                command: dict[str, Any] = {
                    "createRole": doc["role"],
                    "privileges": doc.get("privileges", []),
                    "roles": doc.get("roles", []),
                }
                if doc.get("authenticationRestrictions"):
                    command["authenticationRestrictions"] = doc["authenticationRestrictions"]
                database.command(command)
                self.created.append(f"role:{db}.{doc['role']}")
        for db, docs in sorted(self.users.items()):
            database = client.get_database(db)
            for doc in docs:
                _drop(database, "dropUser", doc["user"], USER_NOT_FOUND)
            temp_users = f"snapledger_restore_users_{run_tag}"
            temp_roles = f"snapledger_restore_roles_{run_tag}"
            admin = client.admin
            try:
                admin.drop_collection(temp_users)
                admin.drop_collection(temp_roles)
                admin.get_collection(temp_users).insert_many(docs)
                admin.create_collection(temp_roles)
                admin.command(
                    {
                        "_mergeAuthzCollections": 1,
                        "tempUsersCollection": f"admin.{temp_users}",
                        "tempRolesCollection": f"admin.{temp_roles}",
                        "db": db,
                        "drop": False,
                    }
                )
                self.created.extend(f"user:{db}.{doc['user']}" for doc in docs)
            finally:
                admin.drop_collection(temp_users)
                admin.drop_collection(temp_roles)


def undo(client: Any, names: list[str]) -> None:
    """Drops the roles and users a dead or failed attempt created ("role:<db>.<name>")."""
    for entry in names:
        what, _, full = entry.partition(":")
        db, name = split_name(full)
        if what == "role":
            _drop(client.get_database(db), "dropRole", name, ROLE_NOT_FOUND)
        elif what == "user":
            _drop(client.get_database(db), "dropUser", name, USER_NOT_FOUND)


def _drop(database: Any, command: str, name: str, not_found: int) -> None:
    try:
        database.command({command: name})
    except OperationFailure as e:
        if e.code != not_found:
            raise


def _inheritance_order(db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roles so that one inheriting another role of the same database comes after it."""
    by_name = {d["role"]: d for d in docs}
    done: set[str] = set()
    out: list[dict[str, Any]] = []

    def visit(name: str, path: frozenset[str]) -> None:
        if name in done or name in path:
            return
        for granted in by_name[name].get("roles", []):
            role, role_db = (granted, db) if isinstance(granted, str) else (granted["role"], granted["db"])
            if role_db == db and role in by_name:
                visit(role, path | {name})
        done.add(name)
        out.append(by_name[name])

    for name in sorted(by_name):
        visit(name, frozenset())
    return out
