"""A MongoDB server for the tests: the one SNAPLEDGER_TEST_MONGODB_URL names (a real mongod),
or else SecantusDB, a MongoDB wire-protocol server over WiredTiger that presents itself as a
one-member replica set (oplog, transactions). SecantusDB is GPL-2.0-only AND CC-BY-4.0: a
test dependency only (the `test` extra), never one of snapledger's.

Each test process starts its own server on a free port, with its data in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo
import pytest

from tests.support.servers import free_port, stop

URL_ENV = "SNAPLEDGER_TEST_MONGODB_URL"
TARGET_URL_ENV = "SNAPLEDGER_TEST_MONGODB_TARGET_URL"  # a second server to restore into
SERVER = Path(sys.executable).parent / "secantusd-py"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run the MongoDB tests)")
    pytest.skip(reason)


def _wait(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=1000) as client:
                client.admin.command("ping")
                return
        except pymongo.errors.PyMongoError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise AssertionError(
                f"the MongoDB test server at {url} did not answer (exit {proc and proc.poll()})"
            )
        time.sleep(0.2)


@contextmanager
def secantus(
    standalone: bool = False, storage: str = ":memory:", auth: bool = False, port: int = 0
) -> Iterator[str]:
    """A SecantusDB server of its own; `standalone`: without a replica set (no oplog);
    `storage`: a directory that outlives it (users made by one server, checked by the next
    with `auth`)."""
    if not SERVER.exists():
        _missing(f"{SERVER} is missing: pip install -e '.[test]' installs SecantusDB")
    port = port or free_port()
    cmd = [str(SERVER), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage]
    cmd += ["--auth"] if auth else []
    # SecantusDB scans its oplog to sort or filter it: keep it short, or every backup's
    # capture slows as the suite writes (a real mongod reads its oplog by time)
    cmd += ["--log-level", "WARNING", "--oplog-max-entries", "20000"]
    cmd += ["--standalone"] if standalone else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        _wait(url, proc)
        yield url
    finally:
        stop(proc)


@contextmanager
def mongo_server(env: str = URL_ENV) -> Iterator[str]:
    url = os.environ.get(env)
    if url:
        _wait(url, None)
        yield url
        return
    with secantus() as found:
        yield found


def database_names(prefix: str = "t") -> tuple[str, str]:
    """Two database names no other test uses (names stay under MongoDB's 64 bytes)."""
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}{tag}shop", f"{prefix}{tag}crm"
