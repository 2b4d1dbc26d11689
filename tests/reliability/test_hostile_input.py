"""Hostile input: every case is refused with a 4xx naming the field, or handled correctly;
never a 5xx, never a half-written record, never a stuck projection."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.api import completed_snapshot, create_policy
from tests.support.tally import report

API = "/api/v1"
BASE = {"source": "demo", "storage": "local"}
SEEN: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _count_answers(client, monkeypatch) -> None:
    """Counts every request these tests send and every 5xx among the answers."""
    send = client.request

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        answer = send(*args, **kwargs)
        SEEN["requests"] += 1
        SEEN["5xx"] += answer.status_code >= 500
        return answer

    monkeypatch.setattr(client, "request", counted)


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    report(f"hostile-input: requests={SEEN['requests']} 5xx={SEEN['5xx']}")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "../../etc/passwd", **BASE}, "name"),
        ({"name": "a/b", **BASE}, "name"),
        ({"name": "bell\x07", **BASE}, "name"),
        ({"name": "nul\x00", **BASE}, "name"),
        ({"name": "名前", **BASE}, "name"),
        ({"name": "\u202eevil", **BASE}, "name"),
        ({"name": "x" * 64, **BASE}, "name"),
        ({"name": 5, **BASE}, "name"),
        ({"name": ["a"], **BASE}, "name"),
        ({"name": "n", "source": "demo'; DROP TABLE policies; --", "storage": "local"}, "source"),
        ({"name": "n", **BASE, "schedule": "0 0 31 2 *"}, "schedule"),  # never fires
        ({"name": "n", **BASE, "schedule": "* * * * * * *"}, "schedule"),
        ({"name": "n", **BASE, "schedule": "60 * * * *"}, "schedule"),
        ({"name": "n", **BASE, "schedule": 3}, "schedule"),
        ({"name": "n", **BASE, "timezone": "../../etc/localtime"}, "timezone"),
        ({"name": "n", **BASE, "retention": {"keep_last": -3}}, "retention.keep_last"),
        ({"name": "n", **BASE, "retention": {"keep_last": 10**30}}, "retention.keep_last"),
        ({"name": "n", **BASE, "retention": {"expire_after": "99999999999d"}}, "retention.expire_after"),
        ({"name": "n", **BASE, "retention": {"expire_after": -1}}, "retention.expire_after"),
        ({"name": "n", **BASE, "collections": {"include": ["../secret"]}}, "collections.include"),
        ({"name": "n", **BASE, "collections": {"include": [""]}}, "collections.include"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(client, body, field):
    r = client.post(f"{API}/policies", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert client.get(f"{API}/policies").json()["items"] == []


def test_malformed_bodies(client):
    deep = "[" * 100_000 + "]" * 100_000
    for raw, status in [
        (deep.encode(), 400),
        (b"\xff\xfe not utf8", 400),
        (b"", 400),
        (b"null", 400),
        (b'"a string"', 400),
        (b'{"name": "n", "source": "demo", "storage": "local", "name": 1}', 422),  # last key wins
        (b"{" + b" " * 10 + b"}", 422),
        (json.dumps({"name": "n" * 10_000, **BASE}).encode(), 422),
        (json.dumps({"name": "n" * (2 << 20), **BASE}).encode(), 413),
    ]:
        r = client.post(f"{API}/policies", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, (raw[:40], r.text[:200])
        assert r.status_code < 500 and r.json()["error"]


def test_weird_but_legal_values_are_stored_faithfully(client):
    pid = create_policy(client, name="ok-1.x_y", collections={"exclude": ["weird'; DROP TABLE x; --", "ünï"]})
    p = client.get(f"{API}/policies/{pid}").json()
    assert p["collections"]["exclude"] == ["weird'; DROP TABLE x; --", "ünï"]
    r = client.patch(f"{API}/policies/{pid}", json={"schedule": "* * * * * */30"})  # every 30 s: legal
    assert r.status_code == 200
    assert client.get(f"{API}/policies/{pid}").json()["next_run_at"] is not None


def test_path_and_query_junk(client):
    snap = completed_snapshot(client, create_policy(client))
    for path in [
        f"{API}/backups/{snap['id']}%2F..%2F..%2Fetc%2Fpasswd",
        f"{API}/backups/..%2F..%2Fetc",
        f"{API}/policies/%00",
        f"{API}/backups?limit=99999999999999999999",
        f"{API}/backups?status=%27%3B%20DROP",
        f"{API}/events?type=%00",
        f"{API}/events?after=1e9",
        f"{API}/backups?created_after=99999-01-01",
        f"{API}/stream?after=-1",
    ]:
        r = client.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
    assert client.get("/readyz").json()["views_position"] > 0  # the projection kept going
