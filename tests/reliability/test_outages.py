"""Database outages, through a proxy that cuts or stalls PostgreSQL (the shared server is
never restarted): every request answers within 2 s while the database is away (503 with
Retry-After, never 500); readiness and mutations recover within 5 s of its return; nothing
accepted is lost or doubled, and a retried mutation under its Idempotency-Key acts once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from api.config import parse_database_url
from api.runtime import Runtime
from tests.support import tally
from tests.support.api import PG_URL
from tests.support.pgproxy import PgProxy
from tests.support.servers import serving
from tests.support.views import assert_views_equal_rebuild

ANSWER_BOUND = 2.0  # seconds: the longest answer while the database is away
RECOVERY_BOUND = 5.0  # seconds: from the database's return to ready and writable


@pytest.fixture
def backend() -> str:
    return "postgresql"


@pytest.fixture
def proxied(make_config, tmp_path, pg_schema):
    """`serve` whose every database connection (event store, views, worker) goes through
    a PgProxy; yields (base url, proxy, config of a direct connection)."""
    upstream = parse_database_url(PG_URL, Path("."), None)
    proxy = PgProxy(int(upstream.port), upstream.host)
    direct = make_config(extra="[worker]\nlease_seconds = 5\nscheduler = false\n")
    text = (tmp_path / "snapledger.toml").read_text()
    via = PG_URL.replace(f":{upstream.port}/", f":{proxy.port}/", 1)
    assert via != PG_URL, "the test database URL must name its port"
    (tmp_path / "proxied.toml").write_text(text.replace(PG_URL, via))
    try:
        with serving(tmp_path / "proxied.toml", tmp_path / "serve.log") as base:
            try:
                yield base, proxy, direct
            finally:
                proxy.mode = "pass"  # so that serve can stop cleanly
    finally:
        proxy.close()


class Load:
    """Clients reading and writing the whole time; each answer's status and duration kept
    with the time its request started."""

    def __init__(self, base: str, policy_id: str, clients: int = 3) -> None:
        self.base, self.policy_id = base, policy_id
        self.answers: list[tuple[float, float, str, int, dict[str, str]]] = []
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, n: int) -> None:
        requests = [
            ("GET", "/api/v1/backups", None),
            ("POST", f"/api/v1/policies/{self.policy_id}/snapshots", None),
            ("GET", "/healthz", None),
            ("GET", "/readyz", None),
            ("POST", "/api/v1/policies", "policy"),
            ("GET", f"/api/v1/policies/{self.policy_id}", None),
        ]
        i = 0
        with httpx.Client(timeout=60) as c:
            while not self.stop.is_set():
                method, path, body = requests[(i + n) % len(requests)]
                i += 1
                kwargs = {"json": {"name": f"p{n}-{i}", "source": "demo", "storage": "local"}} if body else {}
                started = time.monotonic()
                try:
                    r = c.request(method, self.base + path, **kwargs)
                except httpx.TransportError:
                    continue
                took = time.monotonic() - started
                with self.lock:
                    self.answers.append((started, took, f"{method} {path}", r.status_code, dict(r.headers)))
                    if "snapshots" in path and r.status_code == 202:
                        self.accepted.append(r.json()["id"])
                time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def during(self, start: float, end: float) -> list[tuple[float, float, str, int, dict[str, str]]]:
        with self.lock:
            return [a for a in self.answers if start <= a[0] < end]


def _recovery(base: str, policy_id: str, back: float) -> tuple[float, float]:
    """Seconds from `back` until /readyz answers 200, and until a mutation succeeds."""
    ready = writable = None
    with httpx.Client(timeout=60) as c:
        while ready is None or writable is None:
            now = time.monotonic()
            assert now - back < 60, "the API did not recover by itself"
            if ready is None and c.get(f"{base}/readyz").status_code == 200:
                ready = time.monotonic() - back
            if writable is None:
                r = c.post(f"{base}/api/v1/policies/{policy_id}/snapshots")
                if r.status_code == 202:
                    writable = time.monotonic() - back
            time.sleep(0.05)
    return ready, writable


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_requests_answer_within_2s_during_an_outage_and_recover_within_5s(proxied, fault):
    base, proxy, direct = proxied
    r = httpx.post(f"{base}/api/v1/policies", json={"name": "outage", "source": "demo", "storage": "local"})
    policy_id = r.json()["id"]
    load = Load(base, policy_id)
    try:
        time.sleep(1.5)
        down = time.monotonic()
        proxy.mode = fault
        time.sleep(4)
        proxy.mode = "pass"
        back = time.monotonic()
        ready, writable = _recovery(base, policy_id, back)
        time.sleep(0.5)
    finally:
        load.finish()
    outage = load.during(down, back)
    slowest = max(outage, key=lambda a: a[1])
    statuses = Counter(a[3] for a in outage)
    tally.report(
        f"outage ({fault}, 4 s): {len(outage)} requests, slowest answer {slowest[1]:.2f} s ({slowest[2]}), "
        f"statuses {dict(sorted(statuses.items()))}; "
        f"ready again after {ready:.2f} s, writable after {writable:.2f} s"
    )
    assert statuses[500] == 0 and len(outage) > 20, statuses
    assert slowest[1] < ANSWER_BOUND, slowest
    unavailable = [a for a in outage if a[3] == 503]
    assert unavailable and all(a[4].get("retry-after") for a in unavailable)
    assert ready < RECOVERY_BOUND and writable < RECOVERY_BOUND, (ready, writable)

    runtime = Runtime.build(direct)  # the ledger, read past the proxy
    try:
        # Workers resume: every accepted snapshot completes.
        deadline = time.monotonic() + 120
        while left := Counter(s.status for s in map(runtime.app.get_snapshot, load.accepted)) - Counter(
            completed=len(load.accepted)
        ):
            assert time.monotonic() < deadline, f"accepted snapshots did not all complete: {left}"
            time.sleep(0.5)
        runtime.runner.catch_up()
        policy = runtime.app.get_policy(policy_id)
        assert set(load.accepted) <= {str(s) for s in policy.snapshot_ids}  # nothing accepted was lost
        assert len(set(policy.snapshot_ids)) == len(policy.snapshot_ids)  # nor doubled
        assert_views_equal_rebuild(runtime)  # the views the outage interrupted
    finally:
        runtime.views.close()
        runtime.app.close()
