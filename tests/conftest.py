"""Shared fixtures: a real PostgreSQL schema per test, moto's S3 server over HTTP, a client.

Outside CI a missing PostgreSQL skips its tests (with the reason); in CI (CI=1) it fails.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from api.config import Config, load_config
from api.http import create_app
from api.runtime import Runtime
from tests.support.api import IN_CI, PG_URL, SECRET


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run the long reliability variants")


def pytest_configure(config: pytest.Config) -> None:
    from tests.support import tally

    config.addinivalue_line("markers", "soak: a long reliability variant; runs with --soak")
    if not hasattr(config, "workerinput"):  # the main process, before xdist starts workers
        tally.start()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.support import tally

    if hasattr(terminalreporter.config, "workerinput"):
        return  # the main process shows every worker's lines
    lines = tally.lines()
    tally.finish()
    if lines:
        terminalreporter.section("reliability counts")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def _pg_available() -> str | None:
    from api.config import parse_database_url

    db = parse_database_url(PG_URL, Path("."), None)
    try:
        with psycopg.connect(db.conninfo(), connect_timeout=3):
            return None
    except psycopg.OperationalError as e:
        return f"PostgreSQL at {PG_URL} unreachable: {str(e).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_reason() -> str | None:
    return _pg_available()


@pytest.fixture
def pg_schema(pg_reason: str | None) -> Iterator[str]:
    """A fresh schema, dropped afterwards: tests never see each other's events."""
    if pg_reason:
        if IN_CI:
            pytest.fail(pg_reason + " (CI must run the PostgreSQL tests)")
        pytest.skip(pg_reason + " (set SNAPLEDGER_TEST_POSTGRES_URL)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    from api.config import parse_database_url

    # A process of the test may still be writing (a worker finishing a batch): wait for its
    # locks a while, and try again if the drop and that write deadlock.
    with psycopg.connect(parse_database_url(PG_URL, Path("."), None).conninfo(), autocommit=True) as c:
        for attempt in range(5):
            try:
                c.execute("SET lock_timeout = '10s'")
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == 4:
                    raise
                time.sleep(0.5)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback; boto3 talks real HTTP to it."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """A MongoDB server for this test process (tests/support/mongo.py says which)."""
    from tests.support.mongo import URL_ENV, mongo_server

    with mongo_server(URL_ENV) as url:
        yield url


@pytest.fixture(scope="session")
def mongo_target_url() -> Iterator[str]:
    """A second one, to restore into while the first holds the source's databases."""
    from tests.support.mongo import TARGET_URL_ENV, mongo_server

    with mongo_server(TARGET_URL_ENV) as url:
        yield url


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import boto3

    name = f"snap-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~40 MB of incompressible lines: long enough to watch progress and stop a run."""
    from tests.support.servers import write_big_source

    return write_big_source(tmp_path_factory.mktemp("big"))


@pytest.fixture
def make_config(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Config]:
    if backend == "postgresql":  # set up before, and so dropped after, the clients that use it
        request.getfixturevalue("pg_schema")

    def make(extra: str = "", storages: str = "") -> Config:
        monkeypatch.setenv("SNAPLEDGER_TEST_SECRET", SECRET)
        db = ""
        if backend == "postgresql":
            schema = request.getfixturevalue("pg_schema")
            db = f'[database]\nurl = "{PG_URL}?schema={schema}"\n'
        text = f"""
data_dir = "data"
{db}
[sources.secured]
kind = "ndjson"
path = "{Path(__file__).resolve().parent.parent / "transfer" / "sources" / "demo_data"}"

[targets.secured_db]  # a configured password no test restores into: it must never show up
kind = "postgresql"
url = "postgresql://backup@127.0.0.1:1/none"
password_env = "SNAPLEDGER_TEST_SECRET"
{storages}
{extra}
"""
        path = tmp_path / "snapledger.toml"
        path.write_text(text)
        return load_config(path, env={"SNAPLEDGER_TEST_SECRET": SECRET, **os.environ})

    return make


@pytest.fixture
def client_for() -> Iterator[Callable[[Config], TestClient]]:
    clients: list[TestClient] = []

    def make(config: Config) -> TestClient:
        client = TestClient(create_app(Runtime.build(config)), raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_config: Callable[..., Config], client_for: Callable[[Config], TestClient]) -> TestClient:
    return client_for(make_config())
