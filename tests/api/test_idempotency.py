"""Mutations are safe to retry: under one Idempotency-Key a command acts once, a retry
answers the first outcome, and a 503 never hides a write the retry cannot find."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from api.availability import DatabaseUnavailable
from api.runtime import Runtime
from domain.idempotency import RequestKey
from tests.support.api import create_policy

KEY = {"Idempotency-Key": "retry-me-1"}


def _snapshots(client, policy_id: str) -> int:
    runtime = client.app.state.runtime
    return len(runtime.app.get_policy(policy_id).snapshot_ids)


def test_a_retry_under_the_same_key_answers_the_first_outcome(client):
    body = {"name": "once", "source": "demo", "storage": "local"}
    first = client.post("/api/v1/policies", json=body, headers=KEY)
    again = client.post("/api/v1/policies", json=dict(reversed(list(body.items()))), headers=KEY)
    assert first.status_code == again.status_code == 201, again.text
    assert first.headers["idempotency-key"] == again.headers["idempotency-key"] == KEY["Idempotency-Key"]
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    assert "replayed" not in first.json()
    names = [p["name"] for p in client.get("/api/v1/policies").json()["items"]]
    assert names == ["once"]

    pid = first.json()["id"]
    snap = [
        client.post(f"/api/v1/policies/{pid}/snapshots", headers={"Idempotency-Key": "s"}) for _ in range(3)
    ]
    assert {r.status_code for r in snap} == {202}
    assert len({r.json()["id"] for r in snap}) == 1 and _snapshots(client, pid) == 1
    assert all(r.json()["policy_id"] == pid for r in snap)


def test_a_key_used_for_another_request_is_refused_by_name(client):
    pid = create_policy(client, "a")
    assert client.post(f"/api/v1/policies/{pid}/snapshots", headers=KEY).status_code == 202
    r = client.post(f"/api/v1/policies/{pid}/stop", headers=KEY)
    assert r.status_code == 409 and r.json()["field"] == "Idempotency-Key", r.text
    assert "different request" in r.json()["error"]
    r = client.post("/api/v1/policies", json={"name": "b", "source": "demo", "storage": "local"}, headers=KEY)
    assert r.status_code == 409 and r.json()["field"] == "Idempotency-Key"
    assert client.get(f"/api/v1/policies/{pid}").json()["status"] == "active"  # nothing acted


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "é".encode("latin-1")])
def test_a_malformed_key_is_refused_by_name(client, bad):
    pid = create_policy(client, "m")
    r = client.post(f"/api/v1/policies/{pid}/snapshots", headers={"Idempotency-Key": bad})
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key", r.text
    assert _snapshots(client, pid) == 0


def test_keys_belong_to_their_sender(client):
    pid = create_policy(client, "shared")
    alice = client.post(f"/api/v1/policies/{pid}/snapshots", headers={**KEY, "X-Snapledger-Actor": "alice"})
    bob = client.post(f"/api/v1/policies/{pid}/snapshots", headers={**KEY, "X-Snapledger-Actor": "bob"})
    assert alice.status_code == bob.status_code == 202
    assert alice.json()["id"] != bob.json()["id"] and _snapshots(client, pid) == 2


def test_without_a_key_the_server_chooses_one_and_answers_it(client):
    pid = create_policy(client, "unkeyed")
    first = client.post(f"/api/v1/policies/{pid}/snapshots")
    second = client.post(f"/api/v1/policies/{pid}/snapshots")
    assert first.json()["id"] != second.json()["id"]  # two requests, two snapshots
    key = first.headers["idempotency-key"]
    assert key != second.headers["idempotency-key"]
    again = client.post(f"/api/v1/policies/{pid}/snapshots", headers={"Idempotency-Key": key})
    assert again.json()["id"] == first.json()["id"] and _snapshots(client, pid) == 2


def test_every_keyed_mutation_replays(make_config, client_for, big_source):
    client = client_for(make_config(extra=f'[sources.big]\npath = "{big_source}"\n'))
    pid = create_policy(client, "all", source="big")  # runs long enough to be stopped
    snap = client.post(f"/api/v1/policies/{pid}/snapshots").json()["id"]
    calls = [
        ("PATCH", f"/api/v1/policies/{pid}", {"schedule": "0 4 * * *"}),
        ("POST", f"/api/v1/backups/{snap}/stop", None),
        ("POST", f"/api/v1/policies/{pid}/rebuild", None),
        ("POST", f"/api/v1/policies/{pid}/stop", None),
        ("DELETE", f"/api/v1/policies/{pid}", None),
    ]
    for n, (method, path, body) in enumerate(calls):
        headers = {"Idempotency-Key": f"k{n}"}
        first = client.request(method, path, json=body, headers=headers)
        again = client.request(method, path, json=body, headers=headers)
        assert first.status_code < 300 and again.status_code == first.status_code, (path, again.text)
        assert again.json()["replayed"] is True and again.json()["id"] == first.json()["id"]
        assert {
            k: v for k, v in again.json().items() if k not in ("replayed", "position", "views_lagging")
        } == {k: v for k, v in first.json().items() if k not in ("position", "views_lagging")}


def test_concurrent_attempts_under_one_key_act_once(make_config):
    runtime = Runtime.build(make_config())
    try:
        pid = runtime.app.create_policy({"name": "race", "source": "demo", "storage": "local"}, "ops").id
        key = RequestKey("race-1", "ops", "f" * 64, f"POST /api/v1/policies/{pid}/snapshots")
        start = threading.Barrier(8)
        answers: list[str] = []

        def attempt() -> None:
            start.wait()
            answers.append(str(runtime.app.keyed(key, runtime.app.request_snapshot, pid, "ops").id))

        threads = [threading.Thread(target=attempt) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 8 and len(set(answers)) == 1
        assert [str(s) for s in runtime.app.get_policy(pid).snapshot_ids] == answers[:1]
    finally:
        runtime.close()


class Outage:
    """A database watch the test turns off: requests see the database go away."""

    watching = True
    reason = "test outage"

    def __init__(self) -> None:
        self.down = threading.Event()

    @property
    def up(self) -> bool:
        return not self.down.is_set()

    def require(self) -> None:
        if not self.up:
            raise DatabaseUnavailable(self.reason)

    def stop(self) -> None:
        pass


def test_a_503_for_a_write_that_went_on_is_answered_by_the_retry(client, monkeypatch):
    """The database stops answering while a snapshot request waits on it: the client is
    told 503 at once, the abandoned command still commits, and the retry under the key
    the 503 named answers that snapshot instead of taking a second one."""
    runtime = client.app.state.runtime
    pid = create_policy(client, "abandoned")
    outage, finished = Outage(), threading.Event()
    monkeypatch.setattr(runtime, "watch", outage)
    real = runtime.app.request_snapshot

    def slow(*args):
        outage.down.set()
        time.sleep(1.0)  # the guard answers 503 within 0.1 s of the watch turning down
        try:
            return real(*args)
        finally:
            finished.set()

    monkeypatch.setattr(runtime.app, "request_snapshot", slow)
    r = client.post(f"/api/v1/policies/{pid}/snapshots")
    assert r.status_code == 503 and r.headers["retry-after"], r.text
    key = r.headers["idempotency-key"]
    assert finished.wait(30)
    monkeypatch.setattr(runtime.app, "request_snapshot", real)
    outage.down.clear()
    assert _snapshots(client, pid) == 1  # the write went on
    again = client.post(f"/api/v1/policies/{pid}/snapshots", headers={"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["replayed"] is True, again.text
    assert str(runtime.app.get_policy(pid).snapshot_ids[0]) == again.json()["id"]
    assert _snapshots(client, pid) == 1


def test_views_unavailable_after_the_write_answer_the_write(client, monkeypatch):
    """Once the command committed, the answer says so (views_lagging), never 503."""
    runtime = client.app.state.runtime

    def down(position: int) -> bool:
        raise psycopg.OperationalError("views went away")

    monkeypatch.setattr(runtime, "wait", down)
    r = client.post("/api/v1/policies", json={"name": "late", "source": "demo", "storage": "local"})
    assert r.status_code == 201 and r.json()["views_lagging"] is True, r.text
    assert runtime.app.get_policy(r.json()["id"]).name == "late"


def test_the_cli_retries_a_lost_commit_under_its_key(make_config, monkeypatch, capsys):
    """The database commits a CLI snapshot request but the answer is lost: the CLI retries
    under the same key and finds that snapshot instead of taking a second one."""
    import argparse

    from api.cli import common as cli_common

    monkeypatch.setattr(cli_common.time, "sleep", lambda s: None)
    runtime = Runtime.build(make_config())
    try:
        pid = runtime.app.create_policy({"name": "cli", "source": "demo", "storage": "local"}, "ops").id
        real, calls = runtime.app.request_snapshot, []

        def lossy(*args):
            calls.append(args)
            outcome = real(*args)
            if len(calls) == 1:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return outcome

        monkeypatch.setattr(runtime.app, "request_snapshot", lossy)
        args = argparse.Namespace(command="snapshot", action="take", actor="cli:ops")
        outcome = cli_common.once(runtime, args, runtime.app.request_snapshot, pid, "cli:ops")
        assert len(calls) == 1  # the retry found the first commit and did not act again
        assert [s for s in runtime.app.get_policy(pid).snapshot_ids] == [outcome.id]
        assert "retrying" in capsys.readouterr().err
    finally:
        runtime.close()
