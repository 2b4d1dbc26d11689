"""A PostgreSQL database of several large tables with secondary indexes and foreign keys,
backed up and restored by snapledger and by pg_dump / pg_restore, in one run.

    python bench/pg_vs_pg_dump_parallel.py [--scale 1] [--big 5] [--runs 3]

The database (snapledger_bench_shop, made once per scale) has five tables, none over 40 %
of the data, with primary keys, secondary and expression indexes and foreign keys.
Both sides compress with gzip/zlib level 6 and use 2 processes or connections:
- backup: snapledger (parallel = 2) vs `pg_dump -Fd -j 2 -Z 6` (target <= 1.0), and vs
  `pg_dump -Fc -Z 6` (reported);
- restore into an empty database, indexes and foreign keys included: snapledger
  (parallel = 2) vs `pg_restore -j 2` of that directory dump (target <= 1.0);
- peak RSS of a snapledger backup and restore (each in its own process) of the database
  at --scale and at --big times it (target: within 20 %).
The two sides take turns, best of --runs. Prints seconds, MiB and ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transfer.sources.postgres.connection import conninfo  # noqa: E402

URL = "postgresql://postgres@127.0.0.1:5432"

SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text, country char(2),
                        created timestamptz NOT NULL);
CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, title text, price numeric(10,2));
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, placed timestamptz NOT NULL,
                     status text NOT NULL, total numeric(12,2));
CREATE TABLE order_items (order_id bigint NOT NULL, line int NOT NULL, product_id int NOT NULL, qty int,
                          price numeric(10,2), PRIMARY KEY (order_id, line));
CREATE TABLE events (id bigint PRIMARY KEY, customer_id bigint NOT NULL, at timestamptz NOT NULL,
                     kind text, payload jsonb);
"""
FILL = """
INSERT INTO products SELECT i, 'SKU-' || i, 'product ' || md5(i::text), (i % 500) + 0.99
  FROM generate_series(1, 10000) i;
INSERT INTO customers SELECT i, 'user' || i || '@example.org', 'Name ' || md5(i::text),
  (ARRAY['PT','DE','FR','US','BR'])[1 + i % 5], '2020-01-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1::bigint, {customers}) i;
INSERT INTO orders SELECT i, 1 + (i * 7919) % {customers},
  '2024-01-01'::timestamptz + i * interval '17 seconds', (ARRAY['new','paid','shipped','done'])[1 + i % 4],
  (i % 1000) * 1.5
  FROM generate_series(1::bigint, {orders}) i;
INSERT INTO order_items
  SELECT 1 + (i - 1) / 3, 1 + (i - 1) % 3, 1 + (i * 31) % 10000, 1 + i % 5, (i % 300) + 0.5
  FROM generate_series(1::bigint, {items}) i;
INSERT INTO events SELECT i, 1 + (i * 104729) % {customers},
  '2025-01-01'::timestamptz + i * interval '3 seconds', (ARRAY['view','click','cart','buy'])[1 + i % 4],
  jsonb_build_object('page', '/p/' || (i % 977), 'ref', md5(i::text), 'n', i % 13)
  FROM generate_series(1::bigint, {events}) i;
CREATE UNIQUE INDEX customers_email ON customers (lower(email));
CREATE INDEX customers_country ON customers (country);
CREATE UNIQUE INDEX products_sku ON products (sku);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed ON orders (placed);
CREATE INDEX order_items_product ON order_items (product_id);
CREATE INDEX events_customer_at ON events (customer_id, at);
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers;
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders;
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products;
ALTER TABLE events ADD FOREIGN KEY (customer_id) REFERENCES customers;
VACUUM ANALYZE;
"""


def admin(sql: str) -> None:
    with psycopg.connect(conninfo(URL + "/postgres", None), autocommit=True) as c:
        c.execute(sql)


def database(scale: float) -> str:
    """Made once per scale and kept: later runs reuse it."""
    name = f"snapledger_bench_shop_{str(scale).replace('.', '_')}"
    with psycopg.connect(conninfo(URL + "/postgres", None), autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
    building = f"{name}_building"
    admin(f"DROP DATABASE IF EXISTS {building} WITH (FORCE)")
    admin(f"CREATE DATABASE {building}")
    rows = {"customers": 250_000, "orders": 700_000, "items": 1_400_000, "events": 650_000}
    sizes = {k: int(v * scale) for k, v in rows.items()}
    with psycopg.connect(conninfo(f"{URL}/{building}", None), autocommit=True) as c:
        c.execute(SCHEMA)
        for statement in FILL.format(**sizes).split(";\n"):
            if statement.strip():
                c.execute(statement)
    admin(f"ALTER DATABASE {building} RENAME TO {name}")
    return name


def shares(name: str) -> tuple[int, dict[str, float]]:
    with psycopg.connect(conninfo(f"{URL}/{name}", None)) as c:
        rows = c.execute(
            "SELECT relname, pg_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
        total = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    data = sum(r[1] for r in rows)
    return total, {r[0]: r[1] / data for r in rows}


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


CHILD = r"""
import json, sys, time
from pathlib import Path
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.sources.postgres.source import PostgresSource
from transfer.sources.postgres.target import PostgresTarget
from transfer.storage import LocalStorage
what, url, root = sys.argv[1], sys.argv[2], sys.argv[3]
storage = LocalStorage("bench", Path(root))
start = time.perf_counter()
if what == "backup":
    source = PostgresSource("bench", url, None, ["public"])
    source.parallel = 2
    run_backup(source, storage, "b.tar", [], [], {}, lambda *a: None, lambda: False, level=6, parallel=2)
else:
    target = PostgresTarget("bench", url, None, "fail", parallel=2)
    run_restore(storage, "b.tar", target, [], lambda *a: None, lambda: False)
# VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mib": hwm / 1024}))
"""


def ours(what: str, url: str, root: Path) -> dict[str, float]:
    """One snapledger run in a fresh process, so its peak RSS is its own."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, what, url, str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def fresh(name: str) -> str:
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(f"CREATE DATABASE {name}")
    return f"{URL}/{name}"


def run_tool(args: list[str]) -> float:
    return timed(lambda: subprocess.run(args, check=True))


def measure(scale: float, runs: int, tmp: Path) -> dict[str, float]:
    name = database(scale)
    src = f"{URL}/{name}"
    total, share = shares(name)
    biggest = max(share.values())
    print(f"source {name}: {total / 2**20:.0f} MiB; biggest table {biggest:.0%} of the rows' bytes")
    fd, fc, archives = tmp / "fd", tmp / "bench.dump", tmp / "archives"
    keys = ("pg_dump_fd", "pg_dump_fc", "backup", "pg_restore", "restore", "rss_backup", "rss_restore")
    figures: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(runs):  # the two sides take turns, so a slow spell slows one round of both
        shutil.rmtree(fd, ignore_errors=True)
        figures["pg_dump_fd"].append(
            run_tool(["pg_dump", "-Fd", "-j", "2", "-Z", "6", "-f", str(fd), conninfo(src, None)])
        )
        figures["pg_dump_fc"].append(
            run_tool(["pg_dump", "-Fc", "-Z", "6", "-f", str(fc), conninfo(src, None)])
        )
        shutil.rmtree(archives, ignore_errors=True)
        run = ours("backup", src, archives)
        figures["backup"].append(run["seconds"])
        figures["rss_backup"].append(run["rss_mib"])
        restored = fresh(f"{name}_restore")
        figures["pg_restore"].append(
            run_tool(["pg_restore", "-j", "2", "-d", conninfo(restored, None), str(fd)])
        )
        run = ours("restore", fresh(f"{name}_restore"), archives)
        figures["restore"].append(run["seconds"])
        figures["rss_restore"].append(run["rss_mib"])
    admin(f"DROP DATABASE IF EXISTS {name}_restore WITH (FORCE)")
    best = {k: min(v) for k, v in figures.items()}
    best["mib"] = total / 2**20
    best["biggest_share"] = biggest
    return best


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--big", type=float, default=5.0, help="the bigger database, in times --scale")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(args.scale, args.runs, Path(tmp))
        fd, fc, ours_b = small["pg_dump_fd"], small["pg_dump_fc"], small["backup"]
        print(
            f"backup   pg_dump -Fd -j 2: {fd:6.2f} s   pg_dump -Fc: {fc:6.2f} s   snapledger: {ours_b:6.2f} s"
            f"   ratio vs -Fd -j 2: {ours_b / fd:.2f}   vs -Fc: {ours_b / fc:.2f}"
        )
        ref_r, ours_r = small["pg_restore"], small["restore"]
        ratio = ours_r / ref_r
        print(f"restore  pg_restore -j 2: {ref_r:6.2f} s   snapledger: {ours_r:6.2f} s   ratio: {ratio:.2f}")
        big = measure(args.scale * args.big, 1, Path(tmp))
        print(
            f"peak RSS backup {small['rss_backup']:.0f} -> {big['rss_backup']:.0f} MiB, "
            f"restore {small['rss_restore']:.0f} -> {big['rss_restore']:.0f} MiB "
            f"({small['mib']:.0f} -> {big['mib']:.0f} MiB database)"
        )
    return {**small, "big_rss_backup": big["rss_backup"], "big_rss_restore": big["rss_restore"],
            "big_mib": big["mib"], "big_backup": big["backup"], "big_restore": big["restore"],
            "big_pg_dump_fd": big["pg_dump_fd"], "big_pg_restore": big["pg_restore"]}  # fmt: skip


if __name__ == "__main__":
    main()
