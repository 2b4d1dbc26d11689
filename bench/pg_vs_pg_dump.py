"""PostgreSQL backup and restore against pg_dump -Fc / pg_restore, measured in one run.

    python bench/pg_vs_pg_dump.py [--scale 50] [--url postgresql://postgres@127.0.0.1:5432]

Initialises `pgbench -i -s SCALE` in database snapledger_bench (once), then times, best of
--runs, taking turns: pg_dump -Fc to a file vs a snapledger backup to local storage (both gzip/zlib
level 6 by default), and pg_restore vs a snapledger restore into an empty database.
Prints wall times and ratios (snapledger / reference; lower is better, target <= 1.2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transfer.runs.backup import run_backup  # noqa: E402
from transfer.runs.restore import run_restore  # noqa: E402
from transfer.sources.postgres.connection import conninfo  # noqa: E402
from transfer.sources.postgres.source import PostgresSource  # noqa: E402
from transfer.sources.postgres.target import PostgresTarget  # noqa: E402
from transfer.storage import LocalStorage  # noqa: E402

DB = "snapledger_bench"


def admin(url: str, sql: str) -> None:
    with psycopg.connect(conninfo(url + "/postgres", None), autocommit=True) as c:
        c.execute(sql)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best(runs: int, setup, reference, ours) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Best of `runs` for each, the two taking turns: a slow spell of this shared host
    then slows one round of both, not all rounds of one."""
    ref_times, our_times = [], []
    for _ in range(runs):
        setup()
        ref_times.append(timed(reference))
        setup()
        our_times.append(timed(ours))
    return min(ref_times), min(our_times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs the comparison; answers the figures (seconds) so bench/run_all.py can tabulate them."""
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    src_url = f"{args.url}/{DB}"
    with psycopg.connect(conninfo(args.url + "/postgres", None), autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
    if not exists:
        admin(args.url, f"CREATE DATABASE {DB}")
        subprocess.run(
            ["pgbench", "-q", "-i", "-s", str(args.scale), "-d", conninfo(src_url, None)], check=True
        )
    with psycopg.connect(conninfo(src_url, None)) as c:
        rows = c.execute("SELECT count(*) FROM pgbench_accounts").fetchone()[0]
        size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    print(f"source: pgbench, {rows:,} accounts, database {size / 2**20:.0f} MiB; best of {args.runs}")

    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "bench.dump"
        storage = LocalStorage("bench", Path(tmp) / "archives")
        source = PostgresSource("bench", src_url, None, ["public"])
        t_dump, t_ours = best(
            args.runs,
            lambda: None,
            lambda: subprocess.run(["pg_dump", "-Fc", "-f", str(dump), conninfo(src_url, None)], check=True),
            lambda: run_backup(source, storage, "b.tar", [], [], {}, lambda *a: None, lambda: False),
        )
        ours_size = (Path(tmp) / "archives" / "b.tar").stat().st_size
        print(f"backup   pg_dump -Fc : {t_dump:7.2f} s  ({dump.stat().st_size / 2**20:.0f} MiB)")
        print(f"backup   snapledger  : {t_ours:7.2f} s  ({ours_size / 2**20:.0f} MiB)")
        print(f"backup   ratio (snapledger / pg_dump): {t_ours / t_dump:.2f}")

        dst = f"{DB}_restore"
        dst_url = f"{args.url}/{dst}"

        def fresh() -> None:
            admin(args.url, f"DROP DATABASE IF EXISTS {dst} WITH (FORCE)")
            admin(args.url, f"CREATE DATABASE {dst}")

        target = PostgresTarget("bench", dst_url, None, "fail")
        t_pgr, t_res = best(
            args.runs,
            fresh,
            lambda: subprocess.run(["pg_restore", "-d", conninfo(dst_url, None), str(dump)], check=True),
            lambda: run_restore(storage, "b.tar", target, [], lambda *a: None, lambda: False),
        )
        admin(args.url, f"DROP DATABASE IF EXISTS {dst} WITH (FORCE)")
        print(f"restore  pg_restore  : {t_pgr:7.2f} s")
        print(f"restore  snapledger  : {t_res:7.2f} s")
        print(f"restore  ratio (snapledger / pg_restore): {t_res / t_pgr:.2f}")
    return {"pg_dump": t_dump, "backup": t_ours, "pg_restore": t_pgr, "restore": t_res, "scale": args.scale}


if __name__ == "__main__":
    main()
