"""The test database's address, the secret no event may hold, and helpers that drive the
API the way a client does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

PG_URL = os.environ.get("SNAPLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "s3cr3t-Pa55word-never-in-events"
IN_CI = bool(os.environ.get("CI"))


def wait_for(
    client: TestClient, path: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(path).json()
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {path}: last {body}")
        time.sleep(0.05)


def create_policy(client: TestClient, name: str = "nightly", **fields: Any) -> str:
    body = {"name": name, "source": "demo", "storage": "local", **fields}
    r = client.post("/api/v1/policies", json=body)
    assert r.status_code == 201, r.text
    policy_id: str = r.json()["id"]
    return policy_id


def completed_snapshot(client: TestClient, policy_id: str) -> dict[str, Any]:
    r = client.post(f"/api/v1/policies/{policy_id}/snapshots")
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    return wait_for(client, f"/api/v1/backups/{sid}", lambda b: b["status"] in ("completed", "failed"))
