"""No secret ever enters the event store, the views, an API response or a log line."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from tests.conftest import PG_URL, SECRET, completed_snapshot, create_policy, wait_for


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
    """A reason recorded on failure passes through redaction before it becomes an event."""
    from transfer.worker import Resources

    resources = Resources({}, {}, {}, secrets=[SECRET])
    assert (
        resources.redact(f"connect to db failed: password={SECRET}") == "connect to db failed: password=***"
    )
