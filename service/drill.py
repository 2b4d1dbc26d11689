"""One restore drill, as a worker runs it: the throw-away place on the drill target, the
restore into it, the row-for-row check against the archive, the policy's checks, the time
to restore, and the removal of the scratch copy whatever happened.

The scratch place is made from the drill's own name (domain/drill.py `scratch_name`), so a
re-claimed drill finds and removes what a dead attempt left before it starts, and nothing
a drill does can reach a database that is not its scratch copy:
- PostgreSQL: a database created on the target's server, restored into, dropped;
- MongoDB: each archived database restored under a fresh name (`<scratch>_<n>`), dropped;
- NDJSON: a fresh directory under the target's, removed.
A scratch name that is a configured source's database is refused before anything is made.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from domain.drill import Drill
from transfer.errors import TargetError
from transfer.runs import drill as checks
from transfer.runs.contract import ConsistencyError

log = logging.getLogger("snapledger.drill")


@dataclass
class Scratch:
    """A throw-away restore target and how to read it back."""

    target: Any
    mapping: dict[str, str] = field(default_factory=dict)


def _pg_url(url: str, dbname: str) -> str:
    return urlparse(url)._replace(path="/" + dbname).geturl()


def _guard(name: str, sources: dict[str, Any]) -> None:
    """Never a source's database: a drill writes only to what it made for itself."""
    for source in sources.values():
        url = getattr(source, "url", None)
        if isinstance(url, str) and urlparse(url).path.lstrip("/") == name:
            raise TargetError(f"the drill's scratch database {name!r} is a source's database")
        if name in (getattr(source, "databases", None) or []):
            raise TargetError(f"the drill's scratch database {name!r} is a source's database")


def remove_scratch(drill: Drill, target: Any) -> None:
    """Whatever a drill (or a dead attempt of it) made on its target, found by its name."""
    kind = getattr(target, "kind", None)
    if kind == "postgresql":
        import psycopg
        from psycopg import sql

        from transfer.sources.postgres.connection import conninfo

        with psycopg.connect(conninfo(target.url, target.password), autocommit=True, connect_timeout=10) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(drill.scratch))
            )
    elif kind == "mongodb":
        from transfer.sources.mongodb.connection import connect

        client = connect(target.client_factory, target.url, target._password)
        try:
            for name in client.list_database_names():
                if name.startswith(drill.scratch + "_"):
                    client.drop_database(name)
        finally:
            client.close()
    elif kind == "ndjson":
        shutil.rmtree(Path(target.directory) / drill.scratch, ignore_errors=True)


@contextmanager
def scratch_place(
    drill: Drill, target: Any, manifest: dict[str, Any], sources: dict[str, Any]
) -> Iterator[Scratch]:
    """The scratch copy's target, made fresh (what a dead attempt left is removed first),
    and removed when the body ends, however it ends."""
    kind = getattr(target, "kind", None)
    _guard(drill.scratch, sources)
    if kind not in ("postgresql", "mongodb", "ndjson"):
        raise TargetError(f"target {target.name!r} ({kind}) cannot take a drill")
    remove_scratch(drill, target)
    try:
        if kind == "postgresql":
            import psycopg
            from psycopg import sql

            from transfer.sources.postgres.connection import conninfo
            from transfer.sources.postgres.target import PostgresTarget

            with psycopg.connect(
                conninfo(target.url, target.password), autocommit=True, connect_timeout=10
            ) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(drill.scratch)))
            url = _pg_url(target.url, drill.scratch)
            place = Scratch(PostgresTarget(target.name, url, target.password, "fail"))
        elif kind == "mongodb":
            from transfer.sources.mongodb.connection import split_name
            from transfer.sources.mongodb.target import MongoTarget

            databases = sorted({split_name(n)[0] for n in manifest["collections"]})
            renamed = {db: f"{drill.scratch}_{i}" for i, db in enumerate(databases)}
            mapping = {n: f"{renamed[split_name(n)[0]]}.{split_name(n)[1]}" for n in manifest["collections"]}
            place = Scratch(
                MongoTarget(target.name, target.url, target._password, "fail", target.client_factory)
            )
            place.mapping = mapping
        else:
            from transfer.sources.ndjson import NdjsonTarget

            directory = Path(target.directory) / drill.scratch
            directory.mkdir(parents=True)
            place = Scratch(NdjsonTarget(target.name, directory, "fail"))
        yield place
    finally:
        remove_scratch(drill, target)


def read_back(place: Scratch, manifest: dict[str, Any]) -> dict[str, checks.RowDigest]:
    names = sorted(manifest["collections"])
    target = place.target
    if target.kind == "postgresql":
        return checks.postgres_digests(target.url, target.password, names)
    if target.kind == "mongodb":
        from transfer.sources.mongodb.connection import connect

        client = connect(target.client_factory, target.url, target._password)
        try:
            return checks.mongodb_digests(client, {n: place.mapping.get(n, n) for n in names})
        finally:
            client.close()
    return checks.ndjson_digests(target.directory, {n: target.path(n) for n in names})


def run_checks(place: Scratch, queries: list[str]) -> list[dict[str, Any]]:
    """Each of the policy's checks on the restored copy: it must answer a truthy value.
    Read only: each runs in a read-only transaction that is rolled back."""
    if not queries:
        return []
    if place.target.kind != "postgresql":
        raise TargetError("checks are SQL: they run on a PostgreSQL drill target only")
    import psycopg

    from transfer.sources.postgres.connection import conninfo

    out = []
    with psycopg.connect(conninfo(place.target.url, place.target.password), connect_timeout=10) as conn:
        for index, query in enumerate(queries):
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                try:
                    row = conn.execute(query).fetchone()
                except psycopg.Error as e:
                    raise ConsistencyError(f"check {index + 1} failed: {str(e).splitlines()[0]}") from None
            value = row[0] if row else None
            if not value:
                raise ConsistencyError(
                    f"check {index + 1} answered {value!r}, not a truthy value: {query[:200]}"
                )
            out.append({"check": index + 1, "answered": str(value)[:200], "ok": True})
    return out
