"""PostgreSQL restarts under load: the API answers 503 (never 500) while it is down and
recovers by itself; no event is lost or duplicated; views equal a rebuild; workers resume."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from api.runtime import Runtime
from tests.servers import free_port, snapledger_exe, wait_until_up


@pytest.fixture
def backend() -> str:
    return "postgresql"


def _cluster() -> list[str]:
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        pytest.skip("needs a local PostgreSQL cluster managed by pg_ctlcluster")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


@pytest.mark.soak  # ~75 s: the connection pools back off while the server is away
def test_postgres_restart_under_load(make_config, tmp_path):
    cluster = _cluster()
    config = make_config(extra="[worker]\nlease_seconds = 5\nscheduler = false\n")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    exe = snapledger_exe()
    proc = subprocess.Popen(
        [str(exe), "--config", str(tmp_path / "snapledger.toml"), "serve", "--port", str(port)],
        stdout=log, stderr=log, env=dict(os.environ),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    stop = threading.Event()
    try:
        wait_until_up(base.removesuffix("/api/v1"), proc)
        pid = httpx.post(f"{base}/api/v1/policies", json={"name": "pg", "source": "demo", "storage": "local"})
        pid = pid.json()["id"]

        def load() -> None:
            with httpx.Client(timeout=60) as c:
                while not stop.is_set():
                    for method, path in (
                        ("GET", "/api/v1/backups"),
                        ("POST", f"/api/v1/policies/{pid}/snapshots"),
                    ):
                        try:
                            r = c.request(method, base + path)
                        except httpx.TransportError:
                            continue
                        statuses[r.status_code] += 1
                        if method == "POST" and r.status_code == 202:
                            accepted.append(r.json()["id"])
                    time.sleep(0.05)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        subprocess.run([*cluster, "stop", "-m", "fast"], check=True)
        time.sleep(2)
        ready_down = httpx.get(f"{base}/readyz", timeout=60).status_code
        subprocess.run([*cluster, "start"], check=False)  # "already running" is fine too
        recovered = time.monotonic()
        while httpx.get(f"{base}/readyz", timeout=60).status_code != 200:
            assert time.monotonic() - recovered < 30, "the API did not recover by itself"
            time.sleep(0.2)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        subprocess.run([*cluster, "start"], check=False, capture_output=True)
        # Workers resume: every accepted snapshot completes.
        if proc.poll() is None:
            runtime = Runtime.build(config)
            try:
                deadline = time.monotonic() + 90
                while any(runtime.app.get_snapshot(s).status != "completed" for s in accepted):
                    left = Counter(runtime.app.get_snapshot(s).status for s in accepted)
                    assert time.monotonic() < deadline, f"accepted snapshots did not all complete: {left}"
                    time.sleep(0.5)
            finally:
                runtime.views.close()
                runtime.app.close()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert ready_down == 503
    assert statuses[503] > 0, statuses  # the outage was seen...
    assert statuses[500] == 0, statuses  # ...and answered as one, never as a crash
    assert statuses[202] > 0 and statuses[200] > 0

    runtime = Runtime.build(config)
    try:
        runtime.runner.catch_up()
        policy = runtime.app.get_policy(pid)
        assert set(accepted) <= {str(s) for s in policy.snapshot_ids}  # nothing accepted was lost
        assert len(set(policy.snapshot_ids)) == len(policy.snapshot_ids)  # nor duplicated
        from projections.runner import rebuild
        from projections.views import ALL_VIEWS

        tables = [v.table for v in ALL_VIEWS.values()]
        before = {t: runtime.views.query(f"SELECT * FROM {t} ORDER BY id") for t in tables}
        rebuild(runtime.runner, list(ALL_VIEWS))
        assert {t: runtime.views.query(f"SELECT * FROM {t} ORDER BY id") for t in tables} == before
    finally:
        runtime.views.close()
        runtime.app.close()
