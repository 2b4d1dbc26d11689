"""Storage faults: S3 (moto over HTTP) behind a fault-injecting loopback proxy (resets,
500, 503 SlowDown, stalls past the read timeout, truncated answers). Runs go through the
real worker. They succeed through retries, or fail with a clear reason once the retry
budget is spent: never hang past the lease, never complete without a valid archive.

The S3 client gets short timeouts here (S3Retry) so a stall costs half a second, not 30.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from api.runtime import Runtime
from service.janitor import Janitor
from tests.support.s3proxy import FAULTS, FaultyProxy
from tests.support.servers import free_port
from tests.support.tally import report
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.runs.verify import verify_archive
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.storage import S3Retry, S3Storage, StorageError
from transfer.storage.layout import manifest_key

RETRY = S3Retry(connect_timeout=1.0, read_timeout=0.5, max_attempts=5)
DEAD_RETRY = S3Retry(connect_timeout=1.0, read_timeout=0.5, max_attempts=3)
STALL = 1.5  # longer than the read timeout: the client gives up on the stalled answer
LEASE = 30
ACTOR = "storage-faults"


PROXIES: list[FaultyProxy] = []


def _proxy(upstream: str, *args: Any, **kwargs: Any) -> FaultyProxy:
    """A FaultyProxy whose faults count towards the module's total."""
    PROXIES.append(FaultyProxy(upstream, *args, **kwargs))
    return PROXIES[-1]


@pytest.fixture(scope="module", autouse=True)
def _report_total() -> Iterator[None]:
    yield
    kinds = Counter[str]()
    for proxy in PROXIES:
        kinds.update(proxy.injected)
    detail = " ".join(f"{k}={kinds[k]}" for k in FAULTS)
    requests = sum(p.count for p in PROXIES)
    report(f"storage-faults: total requests={requests} faults-injected={sum(kinds.values())} ({detail})")


@pytest.fixture
def backend() -> str:
    """Storage faults do not depend on the event store: one in-process worker on SQLite."""
    return "sqlite"


def _medium_source(directory: Path) -> Path:
    """~16 MB of incompressible lines: an archive of one 5 MB part, another, and a tail."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "events.ndjson", "wb") as f:
        for i in range(16_000):
            f.write(b'{"_id":%d,"blob":"%s"}\n' % (i, os.urandom(500).hex().encode()))
    return directory


@pytest.fixture
def medium_source(tmp_path: Path) -> Path:
    return _medium_source(tmp_path / "medium")


@pytest.fixture
def start(make_config, medium_source, bucket) -> Iterator[Callable[[str, S3Retry], Runtime]]:
    """A runtime whose `s3` storage location talks to `endpoint` with the given budget."""
    runtimes: list[Runtime] = []

    def make(endpoint: str, retry: S3Retry) -> Runtime:
        config = make_config(
            extra=f"""
[sources.medium]
path = "{medium_source}"

[storages.s3]
url = "s3://{bucket}/faults"
endpoint_url = "{endpoint}"
region = "us-east-1"
path_style = true
part_size_mb = 5
concurrency = 2

[worker]
lease_seconds = {LEASE}
scheduler = false
"""
        )
        runtime = Runtime.build(config)
        runtime.resources.storages["s3"] = _s3(bucket, endpoint, retry)
        runtimes.append(runtime.start(worker=True))
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()


def _s3(bucket: str, endpoint: str, retry: S3Retry = RETRY) -> S3Storage:
    return S3Storage(
        "s3", bucket, "faults", endpoint, "us-east-1", 5 << 20, concurrency=2, path_style=True, retry=retry
    )


def _finished(get: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (task := get()).status not in ("completed", "failed", "stopped"):
        assert time.monotonic() < deadline, f"still {task.status} after {timeout} s"
        time.sleep(0.05)
    return task


def _failure_reason(runtime: Runtime, task_id: Any) -> str:
    """The reason its Failed event recorded (restores keep it in their record, not state)."""
    last = list(runtime.app.repository.event_store.get(task_id))[-1]
    return last.reason if type(last).__name__.endswith("Failed") else ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backup(runtime: Runtime, timeout: float = 120, source: str = "medium") -> Any:
    app = runtime.app
    policy = app.create_policy({"name": f"p{time.monotonic_ns()}", "source": source, "storage": "s3"}, ACTOR)
    sid = app.request_snapshot(policy.id, ACTOR).id
    return _finished(lambda: app.get_snapshot(sid), timeout)


def _restore(runtime: Runtime, snapshot_id: Any, timeout: float = 120) -> Any:
    rid = runtime.app.request_restore(snapshot_id, "scratch", {}, ACTOR).id
    return _finished(lambda: runtime.app.get_restore(rid), timeout)


def _sweep_and_count_uploads(runtime: Runtime, s3_endpoint: str, bucket: str) -> tuple[int, list[str]]:
    """The janitor's orphan sweep (no grace: every run here has ended) through a healthy
    endpoint; answers what it removed and the uploads still open after it."""
    runtime.resources.storages["s3"] = _s3(bucket, s3_endpoint)
    runtime.runner.catch_up()
    janitor = Janitor(
        runtime.app,
        runtime.resources.storages,
        runtime.retained,
        runtime.in_flight,
        runtime.resources.targets,
        orphan_grace_seconds=0,
    )
    swept = janitor.sweep(datetime.now(UTC))
    uploads = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_multipart_uploads(
        Bucket=bucket
    )
    return swept, [u["Key"] for u in uploads.get("Uploads", [])]


def test_every_request_faulted_once_still_backs_up_and_restores(start, s3_endpoint, bucket, medium_source):
    """Every distinct request meets one fault, the five kinds in turn: the densest
    schedule a retrying client must get through. Then every answer is cut short once
    while the restore reads: the archive download resumes where it broke. Content comes
    back byte for byte."""
    with _proxy(s3_endpoint, fail_every=1, faults=FAULTS, once=True, stall_seconds=STALL) as proxy:
        runtime = start(proxy.url, RETRY)
        snap = _backup(runtime)
        assert snap.status == "completed", getattr(snap, "reason", "")
        proxy.faults = ("truncate",)
        restore = _restore(runtime, snap.id)
        assert restore.status == "completed", _failure_reason(runtime, restore.id)
    target = runtime.config.targets["scratch"].path / "events.ndjson"
    assert _sha256(target) == _sha256(medium_source / "events.ndjson")
    assert verify_archive(_s3(bucket, s3_endpoint), snap.archive_key).items == 16_000
    assert all(proxy.injected[f] >= 1 for f in FAULTS), proxy.summary()
    assert proxy.ranged >= 2, "broken downloads resume with ranged GETs, not from the start"
    swept, open_uploads = _sweep_and_count_uploads(runtime, s3_endpoint, bucket)
    assert open_uploads == []
    report(f"storage-faults: every request faulted once: {proxy.summary()}; completed, orphans-swept={swept}")


class _Refused:
    """An endpoint where nothing listens: every connection is refused."""

    injected: Counter[str] = Counter()

    def __enter__(self) -> _Refused:
        self.url = f"http://127.0.0.1:{free_port()}"
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_dead_endpoint_fails_the_run_clearly_and_soon(start, s3_endpoint, bucket):
    """Refused, throttled (503 SlowDown) or stalled from the start: the backup fails with
    a reason naming the S3 call and the failure, well within the lease (never re-claimed),
    and no manifest (the commit marker) appears. A restore whose endpoint stalls fails the same way."""
    cases = {
        "refused": "cannot connect to the endpoint",
        "503": "SlowDown (after 3 attempts)",
        "stall": "did not answer in time",
    }
    runtime = start(s3_endpoint, DEAD_RETRY)
    for mode, detail in cases.items():
        with (
            _Refused() if mode == "refused" else _proxy(s3_endpoint, always=mode, stall_seconds=STALL) as dead
        ):
            runtime.resources.storages["s3"] = _s3(bucket, dead.url, DEAD_RETRY)
            began = time.monotonic()
            snap = _backup(runtime, timeout=LEASE, source="demo")
            took = time.monotonic() - began
        assert snap.status == "failed", mode
        # (A storage health probe may meet the fault before the archive's upload does.)
        assert "StorageError" in snap.reason and "S3 upload of" in snap.reason and detail in snap.reason
        assert snap.attempt == 1 and took < LEASE / 2, (mode, took)  # the lease held throughout
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        # No commit marker: a stalled PUT may have landed the archive's bytes, never a manifest.
        assert (
            s3.list_objects_v2(Bucket=bucket, Prefix=f"faults/{manifest_key(snap.archive_key)}")["KeyCount"]
            == 0
        )
        report(f"storage-faults: dead endpoint ({mode}): backup failed in {took:.1f} s: {snap.reason}")
    with _proxy(s3_endpoint, stall_seconds=STALL) as proxy:
        runtime.resources.storages["s3"] = _s3(bucket, proxy.url, DEAD_RETRY)
        snap = _backup(runtime, source="demo")
        assert snap.status == "completed", getattr(snap, "reason", "")
        proxy.always = "stall"
        began = time.monotonic()
        restore = _restore(runtime, snap.id, timeout=LEASE)
        took = time.monotonic() - began
    why = _failure_reason(runtime, restore.id)
    assert restore.status == "failed" and "did not answer in time" in why and "S3 " in why, why
    assert restore.attempt == 1 and took < LEASE / 2, took
    assert not list(runtime.config.targets["scratch"].path.glob("*.ndjson*"))
    report(f"storage-faults: dead endpoint (stall): restore failed in {took:.1f} s: {why}")


def _janitor_sweep(bucket: str, s3_endpoint: str) -> int:
    storages: dict[str, Any] = {"s3": _s3(bucket, s3_endpoint)}
    return Janitor(None, storages, list, in_flight=list, orphan_grace_seconds=0).sweep(datetime.now(UTC))  # type: ignore[arg-type]


def test_endpoint_dying_mid_transfer_fails_clearly_and_soon(s3_endpoint, bucket, medium_source, tmp_path):
    """The endpoint answers the first requests, then dies (resets, stalls, truncations):
    the pipeline gives up after its retry budget with the S3 call in the reason, publishes
    nothing, and the janitor later aborts the upload it could not abort itself. A download
    that dies mid-body resumes until the budget is spent, then fails the same way."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    source = NdjsonSource("medium", medium_source)
    budgets = []
    for mode in ("reset", "stall"):  # reset: nothing reaches S3, not even the abort
        key = f"dying-{mode}.tar"
        with _proxy(s3_endpoint, always=mode, healthy_first=2, stall_seconds=STALL) as proxy:
            storage = _s3(bucket, proxy.url, S3Retry(connect_timeout=1.0, read_timeout=0.25, max_attempts=3))
            began = time.monotonic()
            with pytest.raises(StorageError, match=rf"S3 upload of 'faults/{key}' failed: ") as failed:
                run_backup(source, storage, key, [], [], {}, lambda *a: None, lambda: False)
            budgets.append(time.monotonic() - began)
        assert s3.list_objects_v2(Bucket=bucket, Prefix=f"faults/{key}")["KeyCount"] == 0, mode
        report(
            f"storage-faults: endpoint dying mid-upload ({mode}) after {budgets[-1]:.1f} s: {failed.value}"
        )
    swept = _janitor_sweep(bucket, s3_endpoint)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert swept >= 1  # the upload created before the reset endpoint died, which no abort reached

    run_backup(source, _s3(bucket, s3_endpoint), "intact.tar", [], [], {}, lambda *a: None, lambda: False)
    for mode in ("stall", "truncate"):
        # The manifest reads well; the archive's body breaks and every resume breaks too.
        with _proxy(s3_endpoint, always=mode, healthy_first=1, stall_seconds=STALL) as proxy:
            began = time.monotonic()
            with pytest.raises(StorageError, match=r"S3 download of 'intact.tar' failed: ") as failed:
                run_restore(
                    _s3(bucket, proxy.url, DEAD_RETRY),
                    "intact.tar",
                    NdjsonTarget("t", tmp_path / mode),
                    [],
                    lambda *a: None,
                    lambda: False,
                )
            budgets.append(time.monotonic() - began)
        assert not list((tmp_path / mode).glob("*")), "nothing published, no partial file left"
        report(
            f"storage-faults: endpoint dying mid-download ({mode}) after {budgets[-1]:.1f} s: {failed.value}"
        )
    assert max(budgets) < 15, budgets


@pytest.mark.soak
def test_random_faults_never_complete_wrongly(start, s3_endpoint, bucket, medium_source):
    """Random faults at a fair rate, seeded (SNAPLEDGER_FAULT_SEED replays the draw):
    each run completes with the right content or fails saying which S3 call failed."""
    seed = int(os.environ.get("SNAPLEDGER_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"storage-faults: seed={seed} (SNAPLEDGER_FAULT_SEED={seed} replays the fault draw)", flush=True)
    rates = {fault: 0.05 for fault in FAULTS}  # a quarter of all requests
    outcomes: Counter[str] = Counter()
    source = _sha256(medium_source / "events.ndjson")
    with _proxy(s3_endpoint, rates=rates, seed=seed, stall_seconds=STALL) as proxy:
        runtime = start(proxy.url, RETRY)
        for _ in range(6):
            snap = _backup(runtime)
            outcomes[f"backup {snap.status}"] += 1
            if snap.status != "completed":
                assert "StorageError: " in snap.reason and "S3 " in snap.reason, snap.reason
                continue
            assert verify_archive(_s3(bucket, s3_endpoint), snap.archive_key).items == 16_000
            restore = _restore(runtime, snap.id)
            outcomes[f"restore {restore.status}"] += 1
            if restore.status == "completed":
                assert _sha256(runtime.config.targets["scratch"].path / "events.ndjson") == source
            else:
                assert "StorageError: S3 " in _failure_reason(runtime, restore.id)
    swept, open_uploads = _sweep_and_count_uploads(runtime, s3_endpoint, bucket)
    assert open_uploads == []
    assert outcomes["backup completed"] >= 1, outcomes
    report(f"storage-faults: random seed={seed}: {proxy.summary()}; {dict(outcomes)}; orphans-swept={swept}")


def test_retry_settings_reach_botocore(bucket, s3_endpoint):
    """DESIGN: retries in botocore's standard mode, with bounded connect and read waits."""
    config = _s3(bucket, s3_endpoint, S3Retry(2.0, 3.0, 4)).client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (2.0, 3.0)
    with pytest.raises(StorageError, match="NoSuchKey"):
        _s3(bucket, s3_endpoint).get_bytes("missing")
