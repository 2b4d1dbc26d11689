"""Every source, target and session kind conforms to the data plane's ports (transfer/ports.py).

Instances are built as the pipelines get them: NDJSON over a temporary directory, MongoDB
and PostgreSQL against the test servers (backup sessions opened by their sources, restore
sessions over a real connection). The annotations
let mypy check the same assignments (`mypy tests/transfer/test_ports.py`); the isinstance
checks and the member lists catch at run time an implementation that lost a member,
including one set per instance.

The capability values are pinned too: they are what the pipelines assumed, by default,
before the members were explicit (`transactional` True, `parallel` 1, the rest False).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pymongo
import pytest

from tests.support.api import PG_URL
from transfer.errors import TargetError
from transfer.ports import BackupSession, MemberSink, RestoreSession, Source, Target, Writable
from transfer.runs.reading import Discard, Mapped
from transfer.sources.mongodb.source import MongoSource
from transfer.sources.mongodb.target import MongoTarget
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.sources.postgres import session as postgres
from transfer.sources.postgres.legacy import LegacySession
from transfer.sources.postgres.session import RestoreOptions
from transfer.sources.postgres.source import PostgresSource
from transfer.sources.postgres.target import PostgresTarget
from transfer.sources.registry import build_source, build_target
from transfer.storage.base import Partial

PROTOCOLS = (Source, BackupSession, Target, RestoreSession, MemberSink, Writable)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to by these tests


def _members(protocol: type) -> set[str]:
    """A protocol's members: its annotated attributes and its methods."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n, v in vars(protocol).items() if not n.startswith("_") and callable(v)}
    return names


def _declared(cls: type) -> set[str]:
    """What a class declares for its instances: class attributes, methods, annotations, and
    the configured `name` every constructor sets. A capability must be declared on the class,
    not only set on an instance (transfer/sources/registry.py sets `parallel` on what it builds: a source
    built directly must have it too)."""
    names: set[str] = {"name"}
    for klass in cls.__mro__:
        names |= set(vars(klass)) | set(getattr(klass, "__annotations__", {}))
    return names


def test_the_protocols_document_every_member() -> None:
    source = Path(__file__).resolve().parents[2] / "transfer" / "ports.py"
    lines = source.read_text().splitlines()
    for protocol in PROTOCOLS:
        assert protocol.__doc__, protocol
        for name in _members(protocol):
            value = vars(protocol).get(name)
            if callable(value):
                assert value.__doc__, f"{protocol.__name__}.{name} has no docstring"
            else:
                line = next(x for x in lines if x.strip().startswith(f"{name}:"))
                assert "#" in line, f"{protocol.__name__}.{name} has no comment"


# ---------------------------------------------------------------- MongoDB without a server


# ---------------------------------------------------------------- sources


def _check_source(source: Source, parallel: int) -> None:
    assert isinstance(source, Source)
    assert _members(Source) <= _declared(type(source))
    assert isinstance(source.name, str) and isinstance(source.kind, str)
    assert source.parallel == parallel


def _check_backup(session: BackupSession, parallel_safe: bool, isolated: bool, has_schema: bool) -> None:
    assert isinstance(session, BackupSession)
    assert _members(BackupSession) <= _declared(type(session))
    assert (session.parallel_safe, session.isolated_collections, session.has_schema) == (
        parallel_safe,
        isolated,
        has_schema,
    )


def test_ndjson_source(tmp_path: Path) -> None:
    (tmp_path / "things.ndjson").write_bytes(b'{"a":1}\n')
    source: Source = NdjsonSource("files", tmp_path)
    _check_source(source, parallel=2)
    with source.open() as session:
        _check_backup(session, parallel_safe=True, isolated=True, has_schema=False)
        assert session.schema_members(["things"], "gzip") == []
        assert list(session.estimates()) == ["things"]


def test_mongodb_source(mongo_url: str) -> None:
    with pymongo.MongoClient(mongo_url) as client:
        client.drop_database("ports")
        client.ports.things.insert_one({"_id": 1})
    source: Source = MongoSource("mongo", mongo_url, None, ["ports"])
    _check_source(source, parallel=1)
    with source.open() as session:
        _check_backup(session, parallel_safe=True, isolated=False, has_schema=True)  # views
        assert session.schema_members([], "gzip") == []  # the database has no views
        moment = session.point_in_time()  # a replica set member: the oplog makes it one moment
        assert moment.consistent is True and moment.changes is not None and moment.member


@pytest.mark.parametrize("use_psql", [True, False])
def test_postgresql_source(pg_schema: str, use_psql: bool) -> None:
    source: Source = PostgresSource("pg", PG_URL, None, [pg_schema], use_psql=use_psql)
    _check_source(source, parallel=2)
    with source.open() as session:  # the real session: snapshot exported, no tables to lock
        psql = shutil.which("psql") is not None and use_psql  # with psql each table has its own connection
        _check_backup(session, parallel_safe=psql, isolated=False, has_schema=True)


@pytest.mark.parametrize(
    ("kind", "settings", "parallel"),
    [
        ("ndjson", {"path": "."}, 2),
        ("ndjson", {"path": ".", "parallel": 3}, 3),
        ("postgresql", {"url": UNREACHABLE, "schemas": ["public"]}, 2),
        ("mongodb", {"url": "mongodb://nowhere.invalid/", "databases": [], "parallel": 4}, 4),
    ],
)
def test_built_sources(kind: str, settings: dict[str, Any], parallel: int) -> None:
    endpoint = SimpleNamespace(kind=kind, name="s", settings=settings, password=lambda: None)
    _check_source(build_source(endpoint), parallel)


# ---------------------------------------------------------------- targets


def _check_target(target: Target, transactional: bool) -> None:
    assert isinstance(target, Target)
    assert _members(Target) <= _declared(type(target))
    assert isinstance(target.name, str) and isinstance(target.kind, str)
    assert target.transactional is transactional


def _check_restore(session: RestoreSession) -> None:
    assert isinstance(session, RestoreSession)
    assert _members(RestoreSession) <= _declared(type(session))


def test_ndjson_target(tmp_path: Path) -> None:
    target: Target = NdjsonTarget("files", tmp_path)
    _check_target(target, transactional=True)
    with target.open("ndjson") as session:
        _check_restore(session)
        session.begin({}, None, {})  # a no-op: nothing to plan
        session.prepare("things", None)
        with session.open_out("things") as out:
            assert isinstance(out, Writable)
            out.write(b'{"a":1}\n')
        assert session.count_items("things") == 1
        assert session.schema_notes() is None
        [partial] = target.list_partials()  # the file this uncommitted session writes
        assert partial.key.startswith("things.ndjson") and partial.started <= datetime.now(UTC)
        assert target.cleanup_partials() == 1
        assert target.remove_partial(partial) is False  # gone already
    assert target.cleanup_partials() == 0
    assert target.list_partials() == []
    elsewhere = str(tmp_path.parent / "x.ndjson.snapledger-partial-1")
    outside = Partial(key="x", ref=elsewhere, started=datetime.now(UTC))
    with pytest.raises(TargetError, match="not an unfinished write"):
        target.remove_partial(outside)  # a listed path only: never a file elsewhere


def test_mongodb_target(mongo_target_url: str) -> None:
    with pymongo.MongoClient(mongo_target_url) as client:
        client.drop_database("db")
    target: Target = MongoTarget("mongo", mongo_target_url, None, "fail")
    _check_target(target, transactional=False)
    assert target.cleanup_partials() == 0
    assert target.list_partials() == []
    with target.open("mongodb") as session:
        _check_restore(session)
        session.begin({})
        session.prepare("db.things", None)
        with session.open_out("db.things") as out:
            assert isinstance(out, Writable)
        session.commit()
        assert session.schema_notes() is None  # no oplog was given to replay


def test_postgresql_target(pg_schema: str) -> None:
    target: Target = PostgresTarget("pg", UNREACHABLE, None, "fail")
    _check_target(target, transactional=True)
    assert target.cleanup_partials() == 0
    assert target.list_partials() == []
    pg = PostgresTarget("pg", PG_URL, None, "fail")
    conn = psycopg.connect(PG_URL)
    sessions: list[RestoreSession] = [
        postgres.PostgresRestoreSession(pg, conn, "fail", RestoreOptions()),
        LegacySession(pg, conn, "fail"),
    ]
    for session in sessions:
        _check_restore(session)
    legacy = sessions[1]
    legacy.begin({"schema.dump": b""}, ["a.b"], {})  # format 1: no schema to plan
    assert legacy.schema_notes() is None
    conn.close()


@pytest.mark.parametrize(
    ("kind", "settings", "transactional"),
    [
        ("ndjson", {"path": "."}, True),
        ("postgresql", {"url": UNREACHABLE, "existing": "fail"}, True),
        ("mongodb", {"url": "mongodb://nowhere.invalid/", "existing": "fail"}, False),
    ],
)
def test_built_targets(kind: str, settings: dict[str, Any], transactional: bool) -> None:
    endpoint = SimpleNamespace(kind=kind, name="t", settings=settings, password=lambda: None)
    _check_target(build_target(endpoint), transactional)


# ---------------------------------------------------------------- the pipeline's own sinks


def test_the_pipelines_sinks(tmp_path: Path) -> None:
    discard: MemberSink = Discard("ndjson")
    assert isinstance(discard, MemberSink)
    with discard.open_out("things") as out:
        assert isinstance(out, Writable)
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(NdjsonTarget("files", tmp_path).open("ndjson"))
        mapped: MemberSink = Mapped(session, {"things": "renamed"})
        assert isinstance(mapped, MemberSink)
        mapped.begin({})
        mapped.prepare("things", None)
        with mapped.open_out("things") as out:
            assert isinstance(out, Writable)
    for sink in (Discard, Mapped):
        assert _members(MemberSink) <= _declared(sink)


def test_a_drifted_implementation_is_refused() -> None:
    """The checks above bite: a session without a capability member is not a BackupSession."""

    class Drifted:
        parallel_safe = True
        isolated_collections = False  # has_schema is missing

        def estimates(self) -> dict[str, int]:
            return {}

        def definition(self, collection: str) -> bytes | None:
            return None

        def read_chunks(self, collection: str, on_raw_bytes: Any) -> Iterator[bytes]:
            return iter(())

        def schema_members(self, names: list[str], codec: str) -> list[tuple[str, bytes]]:
            return []

    assert not isinstance(Drifted(), BackupSession)
    assert not _members(BackupSession) <= _declared(Drifted)
