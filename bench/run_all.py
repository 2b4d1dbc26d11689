"""Every benchmark in one run: snapledger and its reference, measured side by side.

    python bench/run_all.py [--quick] [--only NAME ...]

Prints one line per figure: `name  snapledger  reference  ratio  target  ok|MISS`.
`--quick` shrinks every size (whole run under 3 minutes); the default is full sizes.
Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) and moto installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PG = "postgresql://postgres@127.0.0.1:5432/test"
PY = sys.executable
SNAPLEDGER = str(Path(PY).with_name("snapledger"))


@dataclass
class Figure:
    name: str
    ours: float
    ref: float | None
    unit: str
    target: str = "report"
    ok: bool | None = None  # None: report only

    @property
    def ratio(self) -> float | None:
        return self.ours / self.ref if self.ref else None

    def line(self) -> str:
        ref = f"{self.ref:,.1f}" if self.ref is not None else "-"
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "-"
        verdict = "report" if self.ok is None else ("ok" if self.ok else "MISS")
        name, target = f"{self.name:<44}", f"{self.target:<26}"
        return f"{name} {self.ours:>12,.1f} {ref:>12} {ratio:>6}  {target} {verdict}  ({self.unit})"


FIGURES: list[Figure] = []


def emit(fig: Figure) -> None:
    FIGURES.append(fig)
    print(fig.line(), flush=True)


# ------------------------------------------------------------------ helpers
def write_source(directory: Path, megabytes: int) -> int:
    """NDJSON in 3 collections: a 1 MiB block of realistic lines, repeated (fast to make)."""
    import random

    directory.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(1)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    lines, size, i = [], 0, 0
    while size < 1_048_576:
        doc = {
            "_id": i,
            "n": rnd.random(),
            "note": " ".join(rnd.choices(words, k=12)),
            "ref": f"{rnd.getrandbits(64):016x}",
        }
        line = json.dumps(doc) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    block = "".join(lines).encode()
    written = 0
    for name, share in (("orders", 0.5), ("customers", 0.3), ("events", 0.2)):
        with open(directory / f"{name}.ndjson", "wb") as f:
            for _ in range(max(1, round(megabytes * share))):
                f.write(block)
                written += len(block)
    return written


def config_for(tmp: Path, db_url: str | None, extra: str = "") -> Any:
    from api.config import load_config

    tmp.mkdir(parents=True, exist_ok=True)
    db = f'[database]\nurl = "{db_url}"\n' if db_url else ""
    path = tmp / "snapledger.toml"
    path.write_text(f'data_dir = "data"\n{db}\n{extra}\n')
    return load_config(path, env=dict(os.environ)), path


@contextmanager
def pg_schema() -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        yield f"{PG}?schema={schema}"
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def close(rt: Any) -> None:
    rt.runner.stop()
    rt.views.close()
    rt.app.close()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# ------------------------------------------------------- 0. existing scripts
def bench_existing(quick: bool) -> None:
    import ndjson_vs_tar_gzip
    import pg_vs_pg_dump

    r = pg_vs_pg_dump.main(["--runs", "1" if quick else "3", "--scale", "10" if quick else "50"])
    emit(
        Figure(
            "pg backup vs pg_dump -Fc (s)",
            r["backup"],
            r["pg_dump"],
            "s",
            "ratio <= 1.2",
            r["backup"] / r["pg_dump"] <= 1.2,
        )
    )
    emit(
        Figure(
            "pg restore vs pg_restore (s)",
            r["restore"],
            r["pg_restore"],
            "s",
            "ratio <= 1.2",
            r["restore"] / r["pg_restore"] <= 1.2,
        )
    )
    mb, small = ("200", "100") if quick else ("1024", "100")  # 100 MiB: past the read-ahead's fill-up
    r = ndjson_vs_tar_gzip.main(["--mb", mb, "--small-mb", small, "--runs", "1" if quick else "2"])
    tp = r["mib"] / r["tar_gzip"]
    for key, label in (("one", "1 collection at a time"), ("two", "2 in parallel")):
        ours = r["mib"] / r[key]
        emit(
            Figure(
                f"ndjson backup {label} vs tar|gzip -1", ours, tp, "MiB/s", "ratio >= 0.8", ours / tp >= 0.8
            )
        )
    emit(
        Figure(
            f"peak RSS of a backup, {r['mib']:.0f} vs {small} MiB src",
            r["rss_big"],
            r["rss_small"],
            "MiB",
            "ratio <= 1.20",
            r["rss_big"] / r["rss_small"] <= 1.2,
        )
    )


def bench_pg_database(quick: bool) -> None:
    """A database of several large tables with indexes and foreign keys: schema from
    pg_dump, rows by COPY, against pg_dump -Fd -j 2 and pg_restore -j 2 (issue 14)."""
    import pg_vs_pg_dump_parallel

    scale, big = ("0.25", "4") if quick else ("1", "5")
    r = pg_vs_pg_dump_parallel.main(["--scale", scale, "--big", big, "--runs", "1" if quick else "3"])
    emit(Figure("pg db backup vs pg_dump -Fd -j 2 (s)", r["backup"], r["pg_dump_fd"], "s", "ratio <= 1.0",
                r["backup"] <= r["pg_dump_fd"]))  # fmt: skip
    emit(Figure("pg db backup vs pg_dump -Fc (s)", r["backup"], r["pg_dump_fc"], "s"))
    emit(Figure("pg db restore, indexes + FKs, vs pg_restore -j 2", r["restore"], r["pg_restore"], "s",
                "ratio <= 1.0", r["restore"] <= r["pg_restore"]))  # fmt: skip
    for what in ("backup", "restore"):
        emit(Figure(f"peak RSS pg {what}, {r['big_mib']:.0f} vs {r['mib']:.0f} MiB db", r[f"big_rss_{what}"],
                    r[f"rss_{what}"], "MiB", "ratio <= 1.20",
                    r[f"big_rss_{what}"] <= 1.2 * r[f"rss_{what}"]))  # fmt: skip


# --------------------------------------------------------------- 1. S3 vs local
MOTO = """
import sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print("%s:%s" % s.get_host_and_port(), flush=True)
sys.stdin.read()
s.stop()
"""


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's ThreadedMotoServer in its own process, so it does not share our GIL."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    proc = subprocess.Popen(
        [PY, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        yield "http://" + proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def bench_s3(quick: bool, tmp: Path) -> None:
    import boto3

    from transfer.runs.backup import run_backup
    from transfer.sources.ndjson import NdjsonSource
    from transfer.storage import LocalStorage, S3Storage

    mb = 100 if quick else 500
    src = tmp / "s3src"
    size = write_source(src, mb) / 1_048_576
    source = NdjsonSource("b", src)

    def once(storage: Any, key: str) -> float:
        start = time.perf_counter()
        run_backup(
            source,
            storage,
            key,
            [],
            [],
            {},
            lambda *a: None,
            lambda: False,
            codec="gzip",
            level=1,
            parallel=2,
        )
        return time.perf_counter() - start

    t_local = once(LocalStorage("local", tmp / "s3local"), "b.tar")
    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        s3 = S3Storage("s3", "bench", "p", endpoint, "us-east-1", path_style=True)
        t_s3 = once(s3, "b.tar")
    emit(
        Figure(
            f"S3 (moto) vs local backup, {size:.0f} MiB",
            size / t_s3,
            size / t_local,
            "MiB/s",
            "report only",
        )
    )


# ------------------------------------------------------ 2. command throughput
def bench_commands(quick: bool, tmp: Path) -> None:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    from api.runtime import Runtime
    from api.store import event_store_env

    class Counter(Aggregate):
        @event("Created")
        def __init__(self) -> None:
            self.n = 0

        @event("Bumped")
        def bump(self, actor: str) -> None:
            self.n += 1

    class Bare(Application[uuid.UUID]):
        name = "BareBench"

    n = 300 if quick else 1000
    for backend in ("sqlite", "postgresql"):
        with pg_schema() as url:
            d = tmp / f"cmd-{backend}"
            d.mkdir()
            config, _ = config_for(d, url if backend == "postgresql" else None)
            rt = Runtime.build(config)
            try:
                app = rt.app
                policy = app.create_policy(
                    {"name": "bench", "source": "demo", "storage": "local"}, "bench"
                ).id
                bare = Bare(event_store_env(config))
                counter = Counter()
                bare.save(counter)

                # Interleaved rounds, summed: a slow spell of the host hits all three alike.
                spent = {"ours": 0.0, "bare": 0.0, "same": 0.0, "keyed": 0.0}
                rounds = 3
                for _ in range(rounds):
                    for name in spent:
                        start = time.perf_counter()
                        _command_round(name, n // rounds, app, policy, bare, counter)
                        spent[name] += time.perf_counter() - start
                done = 2 * (n // rounds) * rounds
                ours, ref, same, keyed = (done / spent[k] for k in ("ours", "bare", "same", "keyed"))
                bare.close()
            finally:
                close(rt)
        emit(
            Figure(
                f"commands/s take+stop, {backend} ({n} pairs)",
                ours,
                ref,
                "commands/s",
                "ratio >= 0.7",
                ours / ref >= 0.7,
            )
        )
        emit(Figure(f"  same, vs bare appends of the same events ({backend})", ours, same,
                    "commands/s", "report only"))  # fmt: skip
        emit(Figure(f"  under an Idempotency-Key, as the API runs them, vs without ({backend})", keyed, ours,
                    "commands/s", "report only"))  # fmt: skip


def _command_round(name: str, pairs: int, app: Any, policy: Any, bare: Any, counter: Any) -> None:
    if name == "ours":
        for _ in range(pairs):
            sid = app.request_snapshot(policy, "bench").id
            app.stop_snapshot(sid, "bench")
    elif name == "keyed":  # each command records its request key, in the same transaction
        from domain.idempotency import RequestKey

        def key(command: str) -> RequestKey:
            return RequestKey(str(uuid.uuid4()), "bench", "0" * 64, command, given=False)

        for _ in range(pairs):
            sid = app.keyed(key("take"), app.request_snapshot, policy, "bench").id
            app.keyed(key("stop"), app.stop_snapshot, sid, "bench")
    elif name == "bare":
        for _ in range(2 * pairs):  # the aggregate stays in memory: only the append is timed
            counter.bump("bench")
            bare.save(counter)
    else:  # the same appends as Take (2 aggregates, 2 events) and Stop (1 event)
        for _ in range(pairs):
            counter.bump("bench")
            run = type(counter)()
            bare.save(counter, run)
            run.bump("bench")
            bare.save(run)


# --------------------------------------------------------- 3. projection rebuild
def write_mix(app: Any, events: int, batch: int = 400) -> int:
    """A realistic mix straight through the Application: policies, snapshots requested,
    started, a few progress events, completed or stopped, some deleted. Answers the count."""
    from domain.policy import BackupPolicy

    written, pending = 0, []
    now = datetime.now(UTC)
    policy = None
    i = 0
    while written < events:
        if i % 50 == 0:
            if policy is not None:
                app.save(policy, *pending)
                pending = []
            policy = BackupPolicy(
                name=f"p{i}",
                source="demo",
                storage="local",
                schedule=None,
                timezone="UTC",
                retention={},
                collections={},
                actor="bench",
            )
            written += 1
        snap = app._new_snapshot(policy, "manual", "bench")  # as Take a Snapshot builds it
        snap.start("bench-worker", f"ddt-backup-{snap.id.hex[:12]}", 60, now)
        for k in range(1, 5):
            snap.progress(k * 100, k * 10_000, k * 20.0, "orders", now)
        if i % 10 == 9:
            snap.request_stop("bench")
            snap.acknowledge_stop(now)
        else:
            snap.complete(500, 50_000, {"orders": {"items": 500}}, "0" * 64, now)
            if i % 7 == 0:
                snap.delete("user", True, "bench")
        written += 1 + len(snap.pending_events)
        pending.append(snap)
        i += 1
        if len(pending) >= batch:
            app.save(policy, *pending)  # as Take a Snapshot writes: SnapshotTaken first
            pending = []
    app.save(policy, *pending)
    return app.recorder.max_notification_id()


def bench_rebuild(quick: bool, tmp: Path) -> None:
    """`snapledger projections rebuild` as an operator runs it (processes by default: one per
    core from 200,000 events), and in one process, against reading and decoding the log."""
    from api.rebuild import jobs_for, rebuild_views
    from api.runtime import Runtime
    from projections.runner import partition
    from projections.views import ALL_VIEWS

    n, rounds = (50_000, 3) if quick else (1_000_000, 2)
    config, _ = config_for(tmp / "rebuild", None)
    rt = Runtime.build(config)
    names = list(ALL_VIEWS)

    def decode_only() -> float:
        start = time.perf_counter()
        last, count = 0, 0
        while True:
            batch = rt.app.recorder.select_notifications(start=last, limit=500, inclusive_of_start=False)
            if not batch:
                break
            for note in batch:
                rt.app.mapper.to_domain_event(note)
            count += len(batch)
            last = batch[-1].id
        return count / (time.perf_counter() - start)

    def replay(jobs: int | None) -> float:
        start = time.perf_counter()
        rebuild_views(rt, names, jobs)
        return total / (time.perf_counter() - start)

    try:
        total = write_mix(rt.app, n)
        processes = len(partition(names, jobs_for(total, names, None)))
        # Interleaved rounds, best of each: a noisy neighbour slows one round, not the ratio.
        results = [(decode_only(), replay(None), replay(1) if processes > 1 else None) for _ in range(rounds)]
        ref, ours = max(r[0] for r in results), max(r[1] for r in results)
    finally:
        close(rt)
    size = f"{total:,} events{' (quick)' if quick else ''}"
    plural = "es" if processes > 1 else ""
    emit(
        Figure(
            f"rebuild all views, {size}, {processes} process{plural}, best of {rounds}",
            ours,
            ref,
            "events/s, SQLite",
            ">= 0.5x and >= 20,000/s",
            ours / ref >= 0.5 and ours >= 20_000,
        )
    )
    if processes > 1:
        single = max(r[2] for r in results if r[2] is not None)
        emit(Figure("  same in one process (--jobs 1)", single, ref, "events/s, SQLite", "report only"))


# ------------------------------------------------------------ 4. projection lag
def _lag_run(rt: Any, seconds: int, rate: int) -> tuple[float, list[float]]:
    """Appends a progress event every 1/rate s with the runner started; answers the rate
    achieved and each event's append-to-visible time (runner.position() >= its position)."""
    app = rt.app
    policy = app.create_policy({"name": "lag", "source": "demo", "storage": "local"}, "bench").id
    snap = app.get_snapshot(app.request_snapshot(policy, "bench").id)
    snap.start("w", "t", 60, datetime.now(UTC))
    app.record(snap)
    rt.runner.catch_up()
    rt.runner.start()
    pending: list[tuple[int, float]] = []
    lags: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() or pending:
            pos = rt.runner.position()
            now = time.perf_counter()
            with lock:
                while pending and pending[0][0] <= pos:
                    lags.append(now - pending.pop(0)[1])
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    for k in range(seconds * rate):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        snap.progress(k, k * 10, min(99.0, k / 10), "orders", datetime.now(UTC))
        t = time.perf_counter()
        pos = app.record(snap)
        with lock:
            pending.append((pos, t))
    achieved = seconds * rate / (time.perf_counter() - t0)
    done.set()
    watcher.join(timeout=30)
    return achieved, lags


def bench_lag(quick: bool, tmp: Path) -> None:
    from api.runtime import Runtime

    seconds, rate = (5 if quick else 10), 200
    for backend in ("sqlite", "postgresql"):
        with pg_schema() as url:
            d = tmp / f"lag-{backend}"
            config, _ = config_for(d, url if backend == "postgresql" else None)
            rt = Runtime.build(config)
            try:
                achieved, lags = _lag_run(rt, seconds, rate)
            finally:
                close(rt)
        p99 = pct(lags, 0.99) * 1000
        unit = f"ms, p50 {pct(lags, 0.5) * 1000:.0f}, {seconds}s"
        emit(
            Figure(
                f"projection lag p99 @{achieved:.0f} ev/s, {backend}",
                p99,
                None,
                unit,
                "<= 500 ms",
                p99 <= 500,
            )
        )


# ----------------------------------------------------------------- 5. HTTP list
BARE = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from api.logs import setup_logging
body = open(sys.argv[1], "rb").read()
async def backups(request):
    return Response(body, media_type="application/json")
setup_logging()
app = Starlette(routes=[Route("/api/v1/backups", backups)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="info", log_config=None)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(cmd: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    import httpx

    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/backups?limit=1", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"server {cmd} did not start") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def load(url: str, seconds: float, connections: int) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(connections):  # warm every connection
            (await client.get(url)).raise_for_status()
        end = time.perf_counter() + seconds

        async def one() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                r = await client.get(url)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(connections)))
        return len(latencies) / (time.perf_counter() - start), latencies


def _wrk_seconds(text: str) -> float:
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def load_wrk(url: str, seconds: float, connections: int) -> tuple[float, float]:
    """wrk (C, 2 threads) as the load tool when installed: it leaves the cores to the
    server. Answers (req/s, p99 s) from `--latency`."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    p99 = _wrk_seconds(next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%")))
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return rps, p99


def bench_http(quick: bool, tmp: Path) -> None:
    import httpx

    from api.runtime import Runtime
    from domain.policy import BackupPolicy

    records, seconds = (10_000, 5) if quick else (100_000, 10)
    d = tmp / "http"
    d.mkdir()
    config, path = config_for(d, None, "[worker]\nenabled = false\nscheduler = false\n")
    rt = Runtime.build(config)
    try:
        app = rt.app
        policy = BackupPolicy(
            name="http",
            source="demo",
            storage="local",
            schedule=None,
            timezone="UTC",
            retention={},
            collections={},
            actor="bench",
        )
        pending: list[Any] = []
        for _ in range(records):
            pending.append(app._new_snapshot(policy, "manual", "bench"))
            if len(pending) >= 500:
                app.save(*pending)
                pending = []
        app.save(*pending, policy)
        rt.runner.catch_up()
    finally:
        close(rt)
    env = {**os.environ, "SNAPLEDGER_CONFIG": str(path), "PYTHONPATH": str(ROOT)}
    url_path = "/api/v1/backups?limit=50"
    results = {}
    port = free_port()
    with server([SNAPLEDGER, "serve", "--no-worker", "--port", str(port)], port, env):
        url = f"http://127.0.0.1:{port}{url_path}"
        body = httpx.get(url).content
        results["ours"] = asyncio.run(load(url, seconds, 32))
        results["ours1"] = asyncio.run(load(url, 2, 1))
        if shutil.which("wrk"):
            results["ours_wrk"] = load_wrk(url, seconds, 32)
    (d / "body.json").write_bytes(body)
    port = free_port()
    with server([PY, "-c", BARE, str(d / "body.json"), str(port)], port, env):
        results["ref"] = asyncio.run(load(f"http://127.0.0.1:{port}{url_path}", seconds, 32))
        results["ref1"] = asyncio.run(load(f"http://127.0.0.1:{port}{url_path}", 2, 1))
        if shutil.which("wrk"):
            results["ref_wrk"] = load_wrk(f"http://127.0.0.1:{port}{url_path}", seconds, 32)
    (rps, lat), (ref_rps, ref_lat) = results["ours"], results["ref"]
    tag = f"{records:,} records, 32 conns {seconds}s"
    p99, ref_p99 = pct(lat, 0.99) * 1000, pct(ref_lat, 0.99) * 1000
    if "ours_wrk" in results:  # wrk carries the targets; the Python client saturates first
        (w_rps, w_p99), (wr_rps, wr_p99) = results["ours_wrk"], results["ref_wrk"]
        emit(Figure(f"GET /backups?limit=50 req/s ({tag})", w_rps, wr_rps, "req/s, wrk -t2", ">= 0.5x",
                    w_rps / wr_rps >= 0.5))  # fmt: skip
        emit(Figure("GET /backups?limit=50 p99 latency", w_p99 * 1000, wr_p99 * 1000, "ms, wrk", "<= 50 ms",
                    w_p99 * 1000 <= 50))  # fmt: skip
        emit(Figure("  same with httpx+asyncio, req/s", rps, ref_rps, "req/s, client-bound", "report only"))
        emit(Figure("  same with httpx+asyncio, p99", p99, ref_p99, "ms, client-bound", "report only"))
    else:
        emit(Figure(f"GET /backups?limit=50 req/s ({tag})", rps, ref_rps, "req/s, httpx+asyncio", ">= 0.5x",
                    rps / ref_rps >= 0.5))  # fmt: skip
        emit(Figure("GET /backups?limit=50 p99 latency", p99, ref_p99, "ms, httpx", "<= 50 ms", p99 <= 50))
    one, ref_one = pct(results["ours1"][1], 0.99) * 1000, pct(results["ref1"][1], 0.99) * 1000
    emit(
        Figure(
            "  same, 1 connection (no queueing) p99", one, ref_one, f"ms, {len(body):,} B body", "report only"
        )
    )


# ---------------------------------------------------- 6. events per snapshot
def bench_events_per_snapshot(quick: bool, tmp: Path) -> None:
    from api.runtime import Runtime
    from service.worker import Worker

    small, big = 10, (200 if quick else 1024)
    counts = {}
    for mb in (small, big):
        d = tmp / f"eps-{mb}"
        write_source(d / "src", mb)
        config, _ = config_for(d, None, '[sources.src]\nkind = "ndjson"\npath = "src"\n')
        rt = Runtime.build(config)
        try:
            policy = rt.app.create_policy({"name": "eps", "source": "src", "storage": "local"}, "bench").id
            sid = rt.app.request_snapshot(policy, "bench").id
            rt.runner.catch_up()
            worker = Worker(rt.app, rt.resources, rt.find_work)
            assert worker.claim_pending() == 1
            worker.stop()  # waits for the claimed run to finish
            snap = rt.app.get_snapshot(sid)
            assert snap.status == "completed", snap.status
            counts[mb] = len(list(rt.app.recorder.select_events(sid)))
        finally:
            close(rt)
    ok = counts[big] <= 150 and counts[small] <= 150 and counts[big] <= 10 * counts[small]
    emit(
        Figure(
            f"events per snapshot, {big} MiB vs {small} MiB source",
            counts[big],
            counts[small],
            "events",
            "same order, <= 150",
            ok,
        )
    )


# --------------------------------------------------------------- 7. scale-out
def bench_scale_out(quick: bool, tmp: Path) -> None:
    """Each worker compresses on one core (the source's parallel = 1), so that one worker
    uses one of the machine's cores and the figure shows what a second worker adds; with
    the default parallel = 2 one worker already keeps more than one core busy (report)."""
    n = 40 if quick else 200
    for parallel in (1, 2):
        (one, _), (two, share) = (_scale_run(tmp, n, workers, parallel) for workers in (1, 2))
        unit = f"runs/min; runs per worker {share}"
        if parallel == 1:
            name = f"scale-out runs/min, 2 vs 1 worker ({n} snapshots, PG)"
            emit(Figure(name, two, one, unit, "ratio >= 1.6", two / one >= 1.6))
        else:
            emit(Figure("  same, source parallel = 2 (the default)", two, one, unit))


def _scale_run(tmp: Path, n: int, workers: int, parallel: int) -> tuple[float, str]:
    """`workers` worker processes drain n queued snapshots; answers runs/min from the first
    start to the last finish, and how many runs each worker did."""
    from api.runtime import Runtime

    with pg_schema() as url:
        d = tmp / f"scale-{workers}-{parallel}"
        d.mkdir()
        write_source(d / "src", 1)
        extra = (
            f'[sources.src]\nkind = "ndjson"\npath = "src"\nparallel = {parallel}\n'
            "[worker]\nscheduler = false\nlease_seconds = 60\n"
        )
        config, path = config_for(d, url, extra)
        rt = Runtime.build(config)
        try:
            for i in range(n):
                pid = rt.app.create_policy({"name": f"s{i}", "source": "src", "storage": "local"}, "bench").id
                rt.app.request_snapshot(pid, "bench")
            rt.runner.catch_up()
            env = {**os.environ, "SNAPLEDGER_CONFIG": str(path), "PYTHONPATH": str(ROOT)}
            logs = [(d / f"worker-{k}.log").open("wb") for k in range(workers)]  # explain a slow half
            procs = [
                subprocess.Popen(
                    [SNAPLEDGER, "worker"], env=env, cwd=d, stdout=subprocess.DEVNULL, stderr=log
                )
                for log in logs
            ]
            try:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    rt.runner.catch_up()
                    rows = rt.views.query(
                        "SELECT count(*) AS c FROM backup_records WHERE status IN ('completed', 'failed')"
                    )
                    if int(rows[0]["c"]) >= n:
                        break
                    time.sleep(0.2)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(timeout=30)
                for log in logs:
                    log.close()
            rows = rt.views.query(
                "SELECT min(started_at) AS s, max(finished_at) AS f, "
                "sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS ok FROM backup_records"
            )
            first, last = (datetime.fromisoformat(rows[0][k]) for k in ("s", "f"))
            rate = int(rows[0]["ok"]) / (last - first).total_seconds() * 60
            per_worker = rt.views.query("SELECT count(*) AS c FROM backup_records GROUP BY worker")
            counts = sorted((int(r["c"]) for r in per_worker), reverse=True) + [0] * workers
            share = "/".join(str(c) for c in counts[:workers])
            if counts[workers - 1] < n / workers / 4:  # a worker that hardly worked: say why
                for k, p in enumerate(procs):
                    tail = (d / f"worker-{k}.log").read_text(errors="replace").splitlines()[-15:]
                    print(f"# worker {k} exit {p.returncode}, last log lines:", file=sys.stderr)
                    print("\n".join(f"#   {line}" for line in tail), file=sys.stderr, flush=True)
        finally:
            close(rt)
    return rate, share


BENCHES: dict[str, Callable[..., None]] = {
    "existing": lambda quick, tmp: bench_existing(quick),
    "pgdb": lambda quick, tmp: bench_pg_database(quick),
    "s3": bench_s3,
    "commands": bench_commands,
    "rebuild": bench_rebuild,
    "lag": bench_lag,
    "http": bench_http,
    "events": bench_events_per_snapshot,
    "scale": bench_scale_out,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run in under 3 minutes")
    p.add_argument("--only", nargs="*", choices=list(BENCHES), help="run only these benchmarks")
    args = p.parse_args()
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    start = time.perf_counter()
    print(f"{'name':<44} {'snapledger':>12} {'reference':>12} {'ratio':>6}  {'target':<26} verdict  (unit)")
    for name in args.only or list(BENCHES):
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            try:
                BENCHES[name](args.quick, Path(tmp))
            except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
                print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
        print(f"# {name} took {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    print(
        f"# {'quick' if args.quick else 'full'} run, {time.perf_counter() - start:.0f} s in all", flush=True
    )
    misses = [f.name for f in FIGURES if f.ok is False]
    print("# MISS: " + (", ".join(misses) if misses else "none"), flush=True)


if __name__ == "__main__":
    main()
