"""NDJSON backup throughput against `tar -c DIR | gzip -1`, and peak memory vs source size.

    python bench/ndjson_vs_tar_gzip.py [--mb 1024] [--small-mb 100] [--runs 2]

Both sides use the same codec and level (gzip -1). Each backup runs in a child process so
its peak RSS can be read; the RSS of a 100 MB and a 1 GB backup are compared (flat = the
data path streams instead of buffering).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from transfer.sources.ndjson import NdjsonSource
from transfer.runs.backup import run_backup
from transfer.storage import LocalStorage
start = time.perf_counter()
run_backup(NdjsonSource("b", {src!r}), LocalStorage("b", {out!r}), "b.tar", [], [], {{}},
           lambda *a: None, lambda: False, codec="gzip", level=1, parallel={parallel})
print(time.perf_counter() - start)
"""


def make_source(directory: Path, megabytes: int) -> int:
    """Three collections of realistic documents (repetitive keys, varied values)."""
    rnd = random.Random(1)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    target = megabytes * 1_048_576
    written = 0
    shares = {"orders": 0.5, "customers": 0.3, "events": 0.2}
    for name, share in shares.items():
        with open(directory / f"{name}.ndjson", "w") as f:
            limit = written + target * share
            i = 0
            lines = []
            while written < limit:
                doc = {
                    "_id": i,
                    "n": rnd.random(),
                    "tags": rnd.sample(words, 3),
                    "note": " ".join(rnd.choices(words, k=12)),
                    "ref": os.urandom(8).hex(),
                }
                line = json.dumps(doc) + "\n"
                lines.append(line)
                written += len(line)
                i += 1
                if len(lines) == 10_000:
                    f.write("".join(lines))
                    lines.clear()
            f.write("".join(lines))
    return written


def backup(src: Path, out: Path, parallel: int) -> float:
    code = CHILD.format(root=str(ROOT), src=str(src), out=str(out), parallel=parallel)
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(run.stdout)


HWM = """
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(line.split()[1])
"""


def rss_of(src: Path, out: Path) -> int:
    """Peak RSS (KiB) of one backup in a fresh child, read from the child's own VmHWM.

    Not wait4's ru_maxrss: Linux carries the parent's RSS at fork time into the child's
    ru_maxrss across exec, so from a large parent (bench/run_all.py) it reported the
    parent's size, not the backup's."""
    code = CHILD.format(root=str(ROOT), src=str(src), out=str(out), parallel=2) + HWM
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(run.stdout.split()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs the comparison; answers the figures so bench/run_all.py can tabulate them."""
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=1024)
    p.add_argument("--small-mb", type=int, default=100)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        big.mkdir()
        small.mkdir()
        size = make_source(big, args.mb)
        make_source(small, args.small_mb)
        mb = size / 1_048_576

        def reference() -> float:
            start = time.perf_counter()
            subprocess.run(f"tar -cf - -C {big} . | gzip -1 > {tmp}/ref.tar.gz", shell=True, check=True)
            return time.perf_counter() - start

        t_ref = min(reference() for _ in range(args.runs))
        os.unlink(f"{tmp}/ref.tar.gz")
        t_one = min(backup(big, Path(tmp) / "o1", 1) for _ in range(args.runs))
        t_two = min(backup(big, Path(tmp) / "o2", 2) for _ in range(args.runs))
        print(f"source: {mb:.0f} MiB NDJSON in 3 collections; best of {args.runs}; gzip level 1 both sides")
        print(f"tar -c | gzip -1          : {t_ref:6.2f} s  {mb / t_ref:6.1f} MiB/s")
        print(
            f"snapledger, 1 collection at a time : {t_one:6.2f} s  {mb / t_one:6.1f} MiB/s  "
            f"ratio {t_ref / t_one:.2f}"
        )
        print(
            f"snapledger, 2 in parallel : {t_two:6.2f} s  {mb / t_two:6.1f} MiB/s  ratio {t_ref / t_two:.2f}"
        )
        rss_small = rss_of(small, Path(tmp) / "rs")
        rss_big = rss_of(big, Path(tmp) / "rb")
        print(
            f"peak RSS: {args.small_mb} MiB source {rss_small / 1024:.0f} MiB, {mb:.0f} MiB source "
            f"{rss_big / 1024:.0f} MiB (ratio {rss_big / rss_small:.2f}; flat = within 1.20)"
        )
    return {
        "mib": mb,
        "tar_gzip": t_ref,
        "one": t_one,
        "two": t_two,
        "rss_small": rss_small / 1024,
        "rss_big": rss_big / 1024,
    }


if __name__ == "__main__":
    main()
