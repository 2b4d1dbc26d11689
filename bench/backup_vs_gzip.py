"""Backup throughput against `tar | gzip -6` of the same directory, measured in one run.

    python bench/backup_vs_gzip.py [--mb 64]

Prints MB/s for both and the ratio (snapledger / reference; 1.0 = as fast as tar+gzip).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transfer.ndjson import NdjsonSource  # noqa: E402
from transfer.pipeline import run_backup  # noqa: E402
from transfer.storage import LocalStorage  # noqa: E402


def make_source(directory: Path, megabytes: int) -> int:
    rnd = random.Random(1)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    written = 0
    for name in ("orders", "customers"):
        with open(directory / f"{name}.ndjson", "w") as f:
            i = 0
            while written < megabytes * 1_048_576 * (1 if name == "customers" else 0.5):
                doc = {
                    "_id": i,
                    "n": rnd.random(),
                    "tags": rnd.sample(words, 3),
                    "note": " ".join(rnd.choices(words, k=12)),
                    "ref": os.urandom(8).hex(),
                }
                line = json.dumps(doc) + "\n"
                f.write(line)
                written += len(line)
                i += 1
    return written


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        size = make_source(src, args.mb)
        storage = LocalStorage("bench", Path(tmp) / "out")
        source = NdjsonSource("bench", src)

        def ours() -> None:
            run_backup(source, storage, "b/a.tar", [], [], {}, lambda *a: None, lambda: False)

        def reference() -> None:
            subprocess.run(f"tar -cf - -C {src} . | gzip -6 > {tmp}/ref.tar.gz", shell=True, check=True)

        t_ref = best_of(args.runs, reference)
        t_ours = best_of(args.runs, ours)
        mb = size / 1_048_576
        print(f"source: {mb:.1f} MiB NDJSON in 2 collections, best of {args.runs}")
        print(f"tar | gzip -6      : {t_ref:6.2f} s  {mb / t_ref:7.1f} MiB/s")
        print(f"snapledger backup  : {t_ours:6.2f} s  {mb / t_ours:7.1f} MiB/s")
        print(f"ratio (throughput, snapledger / reference): {t_ref / t_ours:.2f}")


if __name__ == "__main__":
    main()
