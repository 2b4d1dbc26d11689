"""No false success: `kill -9` the worker at random points of backups and restores, to
local storage and to S3 (moto over HTTP). Every run then ends completed (after a re-claim)
or failed with a reason; every completed snapshot's archive verifies; every completed
restore wrote exactly the source's bytes; and after the janitor's pass no partial file, no
partial target file and no open multipart upload is left.

Kill points are drawn from a seed that is printed first; `SNAPLEDGER_CRASH_SEED=<n>`
replays the same rounds and delays. The default run kills 7 times (one round of each
kind); `--soak` also runs 20 kills.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from api.runtime import Runtime
from service.janitor import Janitor
from tests.support.servers import WorkerProcesses, wait_until
from tests.support.tally import report
from transfer.runs.verify import verify_archive
from transfer.sources.ndjson import PARTIAL

LEASE = 2  # seconds (the least allowed): a killed worker's run is claimed again soon after
ACTOR = "crash-test"
# One round of each kind per cycle. "delete" and "stop" are an operator acting while the
# killed worker's run has no live worker: only the janitor can clear what it left.
ROUNDS = [
    ("backup", "local"),
    ("backup", "s3"),
    ("restore", "local"),
    ("restore", "s3"),
    ("delete", "s3"),  # a backup killed mid-upload, then deleted: never claimed again
    ("stop", "local"),  # a restore killed mid-write, then stopped: re-claimed only to stop
    ("delete", "local"),
]
DONE = ("completed", "failed", "stopped", "deleted")

_wait = functools.partial(wait_until, every=0.02)  # kill points need a fine poll


@pytest.fixture
def backend() -> str:
    """Worker processes share the PostgreSQL event store (SQLite serves one process)."""
    return "postgresql"


@dataclass
class Round:
    kind: str
    storage: str
    task_id: Any
    interrupted: bool = False  # the kill found the run still going
    status: str = ""
    reason: str = ""
    attempts: int = 0
    target: str | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _play(
    this: Round,
    i: int,
    victim: subprocess.Popen,
    workers: WorkerProcesses,
    runtime: Runtime,
    rng: random.Random,
    span: dict[str, float],
) -> subprocess.Popen:
    """One round: wait for the claim, kill the worker at a random point, start the next
    one (which re-claims the run once its lease lapses), wait for the end. Answers the
    live worker, the next round's victim."""
    app = runtime.app
    kind = this.kind

    def get() -> Any:
        if kind in ("backup", "delete"):
            return app.get_snapshot(this.task_id)
        return app.get_restore(this.task_id)

    _wait(lambda: get().status == "running", 30, f"round {i}: the claim")
    if kind == "delete" and this.storage == "s3":
        # Members are compressed to a spool file first and uploaded at the end: kill
        # while the multipart upload is open.
        storage = runtime.resources.storages["s3"]
        key = get().archive_key
        _wait(
            lambda: any(p.key == key for p in storage.list_partials()) or get().status in DONE,
            30,
            f"round {i}: the upload",
        )
        time.sleep(rng.uniform(0, 0.2))
    elif kind in ("delete", "stop"):
        mark = rng.uniform(20, 80)  # far enough in that a partial file exists
        _wait(lambda: get().percent >= mark or get().status in DONE, 30, f"round {i}: {mark:.0f}%")
    else:
        time.sleep(rng.uniform(0, span[kind]))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    this.interrupted = get().status == "running"
    victim = workers.start()
    if kind == "delete":
        runtime.delete_snapshot(str(this.task_id), ACTOR)
    elif kind == "stop" and this.interrupted:
        app.stop_restore(this.task_id, ACTOR)
    reclaimed = _wait(lambda: get().attempt > 1 or get().status in DONE, 60, f"round {i}: the re-claim")
    started = time.monotonic()
    final = _wait(lambda: (t := get()).status in DONE and t, 90, f"round {i}: the end of the run")
    if kind in span and final.status == "completed" and reclaimed:
        span[kind] = max(0.2, 0.9 * (time.monotonic() - started))
    this.status, this.attempts = final.status, final.attempt
    this.reason = getattr(final, "reason", "") or ""
    return victim


@pytest.mark.parametrize("kills", [len(ROUNDS), pytest.param(20, marks=pytest.mark.soak)])
def test_kill_nine_at_random_points(kills, make_config, big_source, s3_endpoint, bucket, tmp_path):
    seed = int(os.environ.get("SNAPLEDGER_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"crash-points: seed={seed} (SNAPLEDGER_CRASH_SEED={seed} replays the kill points)", flush=True)
    rng = random.Random(seed)
    plan = [ROUNDS[i % len(ROUNDS)] for i in range(kills)]
    restores = sum(kind in ("restore", "stop") for kind, _ in plan)
    targets = "".join(
        f'[targets.t{n}]\nkind = "ndjson"\npath = "{tmp_path / "targets" / f"t{n}"}"\n'
        for n in range(restores)
    )
    config = make_config(
        extra=f"""
[sources.big]
path = "{big_source}"

[storages.s3]
url = "s3://{bucket}/crash"
endpoint_url = "{s3_endpoint}"
region = "us-east-1"
path_style = true
part_size_mb = 5
concurrency = 2

{targets}
[worker]
lease_seconds = {LEASE}
scheduler = false
"""
    )
    runtime = Runtime.build(config)  # this process only commands and reads; workers run apart
    app = runtime.app
    workers = WorkerProcesses(tmp_path / "snapledger.toml", tmp_path)
    policies = {
        name: app.create_policy({"name": f"big-{name}", "source": "big", "storage": name}, ACTOR).id
        for name in ("local", "s3")
    }
    # How long a whole run takes here, refreshed from each re-claimed run: delays are drawn
    # within it, so most kills land mid-run whatever the machine's speed.
    span = {"backup": 1.5, "restore": 0.5}
    rounds: list[Round] = []
    try:
        victim = workers.start()
        for i, (kind, storage) in enumerate(plan):
            if kind in ("backup", "delete"):
                task_id, target = app.request_snapshot(policies[storage], ACTOR).id, None
            else:
                source = next(
                    r.task_id
                    for r in reversed(rounds)
                    if r.kind == "backup" and r.storage == storage and r.status == "completed"
                )
                target = f"t{sum(r.target is not None for r in rounds)}"
                task_id = app.request_restore(source, target, {}, ACTOR).id
            rounds.append(Round(kind, storage, task_id, target=target))
            victim = _play(rounds[-1], i, victim, workers, runtime, rng, span)
    finally:
        workers.close()

    logs = workers.logs()
    summary = Counter(r.status for r in rounds)
    interrupted = sum(r.interrupted for r in rounds)
    detail = "; ".join(f"{r.kind}/{r.storage}: {r.status} x{r.attempts} {r.reason}" for r in rounds)

    # Every run ended as the round asked: completed after its re-claim, or failed saying why.
    for r in rounds:
        expected = {"delete": ("deleted",), "stop": ("stopped",) if r.interrupted else ("completed",)}
        assert r.status in expected.get(r.kind, ("completed", "failed")), detail
        if r.status == "failed":
            assert r.reason.strip(), detail
        if r.interrupted and r.kind != "delete":
            assert r.attempts >= 2, detail
    assert summary["failed"] == 0, f"a killed run must recover, not fail: {detail}\n{logs[-3000:]}"
    assert interrupted >= len(rounds) // 2, f"too few kills landed mid-run to prove much: {detail}"

    # No false success: every completed snapshot's archive and manifest exist and verify.
    verified = 0
    source_sha = _sha256(big_source / "events.ndjson")
    for r in rounds:
        if r.status != "completed":
            continue
        if r.kind == "backup":
            snap = app.get_snapshot(r.task_id)
            assert verify_archive(runtime.resources.storages[r.storage], snap.archive_key).items == 40_000
            verified += 1
        else:
            assert r.target is not None
            assert _sha256(runtime.config.targets[r.target].path / "events.ndjson") == source_sha, detail

    # The janitor's pass (no grace: every run has ended) leaves no unfinished write behind.
    runtime.runner.catch_up()
    local = runtime.resources.storages["local"].root
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def leftovers() -> list[str]:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        files = [p for p in local.rglob("*") if ".partial-" in p.name]
        files += [p for p in (tmp_path / "targets").rglob("*") if PARTIAL in p.name]
        return [u["Key"] for u in uploads] + [str(p) for p in files]

    before = leftovers()
    janitor = Janitor(
        app,
        runtime.resources.storages,
        runtime.retained,
        runtime.in_flight,
        runtime.resources.targets,
        orphan_grace_seconds=0,
    )
    swept = janitor.sweep(datetime.now(UTC))
    assert leftovers() == [], f"left after the janitor: {leftovers()}"
    assert swept == len(before), (swept, before)
    runtime.views.close()
    app.close()
    report(
        f"crash-points: seed={seed} kills={kills} mid-run={interrupted} completed={summary['completed']} "
        f"failed={summary['failed']} stopped={summary['stopped']} deleted={summary['deleted']} "
        f"archives-verified={verified} orphans-swept={swept}"
    )
