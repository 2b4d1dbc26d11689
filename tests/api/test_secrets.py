"""No secret (passwords, API tokens) ever enters the event store, the views, an API response,
the Event Log or a log line."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from api.config import load_config
from domain.secrets import spellings
from tests.support.api import PG_URL, SECRET, completed_snapshot, create_policy, wait_for
from tests.support.servers import free_port, snapledger_exe, wait_until_up
from tests.support.tally import report


def _sqlite_bytes(config) -> bytes:
    root = Path(config.database.path).parent
    return b"".join(p.read_bytes() for p in root.glob("*.db*"))


def _pg_text(config) -> str:
    from api.config import parse_database_url

    conninfo = parse_database_url(PG_URL, Path("."), None).conninfo()
    out = []
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (config.database.schema,),
        ).fetchall()
        names = {t[0] for t in tables}
        assert {"backup_records", "policies"} <= names and any("events" in n for n in names), names
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{config.database.schema}"."{table}"'):
                out.append(
                    " ".join(
                        bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else str(v)
                        for v in row
                    )
                )
    return "\n".join(out)


def test_configured_password_never_stored(make_config, client_for, caplog):
    caplog.set_level(logging.DEBUG)
    config = make_config()
    assert SECRET in config.secrets  # the source's password_env was resolved...
    client = client_for(config)
    pid = create_policy(client, name="secured", source="secured")
    snap = completed_snapshot(client, pid)
    assert snap["status"] == "completed"
    rid = client.post("/api/v1/restores", json={"snapshot_id": snap["id"], "target": "scratch"}).json()["id"]
    wait_for(client, f"/api/v1/restores/{rid}", lambda b: b["status"] == "completed")
    responses = [
        client.get(p).text
        for p in (
            "/api/v1/events?limit=500",
            "/api/v1/backups",
            f"/api/v1/policies/{pid}",
            "/api/v1/restores",
        )
    ]
    assert all(SECRET not in r for r in responses)
    assert SECRET not in caplog.text

    stored = _sqlite_bytes(config).decode("latin-1") if config.database.kind == "sqlite" else _pg_text(config)
    assert "SnapshotCompleted" in stored or "secured" in stored  # we did read the store
    assert SECRET not in stored  # ...and it is nowhere in it


def test_failure_reason_is_redacted(make_config, client_for, tmp_path):
    """A reason recorded on failure passes through redaction before it becomes an event, in
    each spelling a secret can take."""
    import base64

    from service.resources import Resources

    secret = "pa55+w/rd=" + SECRET
    resources = Resources({}, {}, {}, secrets=[secret])
    assert (
        resources.redact(f"connect to db failed: password={secret}") == "connect to db failed: password=***"
    )
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(secret, safe=""))
    for form in (quote(secret, safe=""), lower_hex, base64.b64encode(secret.encode()).decode()):
        assert secret not in resources.redact(f"x {form} y") and form not in resources.redact(f"x {form} y")


def test_a_refused_requests_access_line_keeps_no_query():
    from api.logs import RefusedRequestQueries

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/backups?access_token=abc", "1.1", 401), None,
    )  # fmt: skip
    RefusedRequestQueries().filter(record)
    assert "abc" not in record.getMessage() and "/api/v1/backups?[query dropped]" in record.getMessage()
    ok = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/v1/backups?limit=5", "1.1", 200), None,
    )  # fmt: skip
    RefusedRequestQueries().filter(ok)
    assert "limit=5" in ok.getMessage()


def _admin(dbname: str = "test") -> psycopg.Connection:
    from api.config import parse_database_url

    url = PG_URL.rsplit("/", 1)[0] + "/" + dbname
    return psycopg.connect(parse_database_url(url, Path("."), None).conninfo(), autocommit=True)


@pytest.fixture
def crm(pg_schema: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL source schema with rows, and an empty database to restore it into."""
    schema, target_db = f"crm_{uuid.uuid4().hex[:8]}", f"sl_secrets_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".customers (id int PRIMARY KEY, name text NOT NULL)')
        conn.execute(f"INSERT INTO \"{schema}\".customers SELECT i, 'c' || i FROM generate_series(1, 500) i")
        conn.execute(f'CREATE DATABASE "{target_db}"')
    yield schema, target_db
    with _admin() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')


def _get_paths(ids: dict[str, str]) -> list[str]:
    """Every GET route of the API with its path parameters filled in, and the probes."""
    from starlette.routing import Route

    from api.http import ROUTES

    paths = ["/metrics", "/readyz", "/api/v1/stream?timeout=1", "/api/v1/events?limit=500"]
    for route in ROUTES:
        if isinstance(route, Route) and "GET" in (route.methods or ()) and "stream" not in route.path:
            paths.append(route.path.format(**ids))
    return paths


def test_no_secret_anywhere_after_a_full_run(pg_schema, crm, tmp_path, monkeypatch):
    """A real `serve` on PostgreSQL with a database password, source and target passwords
    and two API tokens: backups, a restore, a failure, refused requests, the CLI. No
    secret is then in the event store, the views, a log line, an API answer or the
    Event Log."""
    schema, target_db = crm
    base_url = PG_URL.rsplit("/", 1)[0]
    # With +, / and = (as a base64 token has): percent-encoding changes them, so an access
    # log or a URL-quoted error can carry a spelling the raw form does not match.
    secrets = {
        name: f"{name}-Op3r+T0k/en={uuid.uuid4().hex}"
        for name in ("DB_PW", "CRM_PW", "TARGET_PW", "ALICE", "VIC")
    }
    for name, value in secrets.items():
        monkeypatch.setenv(f"SNAPLEDGER_T_{name}", value)
    monkeypatch.setenv("SNAPLEDGER_TEST_SECRET", SECRET)
    env = dict(os.environ)
    config_path = tmp_path / "snapledger.toml"
    config_path.write_text(
        f"""
data_dir = "data"

[database]
url = "{PG_URL}?schema={pg_schema}"
password_env = "SNAPLEDGER_T_DB_PW"

[sources.crm]
kind = "postgresql"
url = "{base_url}/test"
password_env = "SNAPLEDGER_T_CRM_PW"
schemas = ["{schema}"]

[sources.gone]
kind = "postgresql"
url = "{base_url}/no_such_database_{uuid.uuid4().hex[:6]}"
password_env = "SNAPLEDGER_T_CRM_PW"
schemas = ["public"]

[sources.secured]
kind = "ndjson"
path = "{Path(__file__).resolve().parents[2] / "transfer" / "sources" / "demo_data"}"

[targets.secured_db]  # a configured password no test restores into: it must never show up
kind = "postgresql"
url = "postgresql://backup@127.0.0.1:1/none"
password_env = "SNAPLEDGER_TEST_SECRET"

[targets.staging]
kind = "postgresql"
url = "{base_url}/{target_db}"
password_env = "SNAPLEDGER_T_TARGET_PW"
existing = "fail"

[worker]
lease_seconds = 10

[[api.tokens]]
name = "alice"
role = "operator"
token_env = "SNAPLEDGER_T_ALICE"

[[api.tokens]]
name = "vic"
role = "viewer"
token_env = "SNAPLEDGER_T_VIC"
"""
    )
    every = [*secrets.values(), SECRET]
    port = free_port()
    log_path = tmp_path / "serve.log"
    answers: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [snapledger_exe(), "--config", str(config_path), "serve", "--port", str(port)],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}", proc)
            alice = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {secrets['ALICE']}"}
            )

            def call(method: str, path: str, **kw: Any) -> httpx.Response:
                r = alice.request(method, path, **kw)
                answers.append(f"{method} {path} {r.status_code} {r.headers} {r.text}")
                assert r.status_code < 500, answers[-1]
                return r

            def finished(path: str) -> dict[str, Any]:
                deadline = time.monotonic() + 60
                while (body := call("GET", path).json())["status"] not in ("completed", "failed"):
                    assert time.monotonic() < deadline, body
                    time.sleep(0.1)
                return body

            ids = {}
            for source in ("crm", "secured", "gone"):
                pid = call(
                    "POST", "/api/v1/policies", json={"name": source, "source": source, "storage": "local"}
                )
                ids[source] = pid.json()["id"]
                sid = call("POST", f"/api/v1/policies/{ids[source]}/snapshots").json()["id"]
                ids[f"{source}-snapshot"] = sid
                assert finished(f"/api/v1/backups/{sid}")["status"] == (
                    "failed" if source == "gone" else "completed"
                )
            rid = call(
                "POST", "/api/v1/restores", json={"snapshot_id": ids["crm-snapshot"], "target": "staging"}
            )
            restore = finished(f"/api/v1/restores/{rid.json()['id']}")
            assert restore["status"] == "completed", restore
            # A drill into the password-protected target: its scratch database, its record.
            did = call("POST", f"/api/v1/policies/{ids['crm']}/drill", json={"target": "staging"}).json()[
                "id"
            ]
            deadline = time.monotonic() + 60
            while call("GET", f"/api/v1/drills/{did}").json()["status"] not in ("passed", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            with _admin(target_db) as conn:
                assert conn.execute(f'SELECT count(*) FROM "{schema}".customers').fetchone()[0] == 500

            # Refused requests: a viewer mutating, a wrong token, a token in the wrong place.
            for headers in (
                {"Authorization": f"Bearer {secrets['VIC']}"},
                {"Authorization": f"Bearer {secrets['ALICE']}x"},
                {"Authorization": secrets["ALICE"]},
                {"X-Api-Key": secrets["ALICE"]},
            ):
                r = httpx.post(f"http://127.0.0.1:{port}/api/v1/policies/{ids['crm']}/stop", headers=headers)
                assert r.status_code in (401, 403), r.text
                answers.append(r.text)
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/backups", params={"access_token": secrets["ALICE"]}
            )
            assert r.status_code == 401, r.text  # a token in the URL is no token (and not logged)
            answers.append(r.text)
            for secret in (secrets["ALICE"], secrets["CRM_PW"]):  # by mistake in a path
                r = alice.get(f"/api/v1/backups/{quote(secret, safe='')}")
                assert r.status_code in (404, 422), r.text
                answers.append(r.text)
            ids.update(
                policy_id=ids["crm"],
                snapshot_id=ids["crm-snapshot"],
                restore_id=rid.json()["id"],
                drill_id=did,
                storage="local",
            )
            for path in _get_paths(ids):
                call("GET", path)
            cli = subprocess.run(
                [snapledger_exe(), "--config", str(config_path), "events", "--json"],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            answers.append(cli.stdout + cli.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    config = load_config(config_path)
    assert set(every) <= set(config.secrets)  # all were configured, tokens included
    logs = log_path.read_text()
    assert "snapshot" in logs.lower() and len(logs.splitlines()) > 10  # the server did log its work
    stored = _pg_text(config)
    assert ids["crm-snapshot"] in stored and "SnapshotFailed" in stored  # we did read the store
    where = {"the event store and views": stored, "the log": logs, "an API answer": "\n".join(answers)}
    for name, text in where.items():
        leaked = [(s.split("-")[0], form) for s in every for form in spellings(s) if form in text]
        assert not leaked, f"{leaked} found in {name}"
    lines = len(logs.splitlines())
    report(f"secrets: {len(every)} secrets, {len(answers)} API/CLI answers, {lines} log lines: none leaked")
