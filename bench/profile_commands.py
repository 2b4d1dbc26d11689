"""Profiles Take a Snapshot + Stop on one aging policy (SQLite), as BENCHMARKS.md reports:
300 timed pairs after 200 untimed ones, then the top of cProfile by cumulative time.

    python bench/profile_commands.py
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run_all  # noqa: E402

from api.runtime import Runtime  # noqa: E402


def main() -> None:
    config, _ = run_all.config_for(Path(tempfile.mkdtemp()) / "commands", None)
    runtime = Runtime.build(config)
    app = runtime.app
    policy = app.create_policy({"name": "bench", "source": "demo", "storage": "local"}, "bench").id
    for _ in range(200):
        app.stop_snapshot(app.request_snapshot(policy, "bench").id, "bench")
    profile = cProfile.Profile()
    profile.enable()
    start = time.perf_counter()
    for _ in range(300):
        app.stop_snapshot(app.request_snapshot(policy, "bench").id, "bench")
    rate = 600 / (time.perf_counter() - start)
    profile.disable()
    print(f"{rate:.1f} commands/s under the profiler")
    pstats.Stats(profile).sort_stats(sys.argv[1] if len(sys.argv) > 1 else "cumtime").print_stats(30)
    run_all.close(runtime)


if __name__ == "__main__":
    main()
