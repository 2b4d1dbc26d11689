"""Rebuilds record views, in parallel processes when the log is long.

A replay is CPU-bound Python (decode, then each view's handlers), so threads would share
one core. Views are independent: their own tables, their own tracking position. So each
process reads the whole log and replays a group of views (`projections.runner.partition`);
on SQLite the runner holds the file's write lock only while writing a batch, so the
processes' handler work overlaps. A group that fails leaves the other groups rebuilt and
its own views at the position they reached, which the next runner continues from.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from subprocess import PIPE

from api.config import Config
from api.logs import setup_logging
from api.runtime import Runtime
from api.store import open_store
from projections.runner import ProjectionRunner, partition, rebuild
from projections.views import ALL_VIEWS

# Below this many events a second process costs more to start (about 0.5 s of imports and
# connections) than it saves: a single process replays 200,000 events in a few seconds.
PARALLEL_FROM = 200_000


def jobs_for(events: int, names: list[str], jobs: int | None) -> int:
    """How many processes: as asked, or by default one per core when the log is long."""
    if jobs is not None:
        return jobs
    return min(os.cpu_count() or 1, len(names)) if events >= PARALLEL_FROM else 1


def rebuild_views(runtime: Runtime, names: list[str], jobs: int | None = None) -> dict[str, int]:
    """Drops and replays the named views; answers how many events each replay read. The
    first group is replayed in this process, each other one by a `python -m api.rebuild`
    child (a fresh interpreter: nothing of this process's connections or threads, and no
    re-import of the caller's main module as multiprocessing's spawn would do)."""
    events = runtime.app.recorder.max_notification_id() or 0
    groups = partition(names, jobs_for(events, names, jobs))
    children = [_start(runtime.config, group) for group in groups[1:]]
    try:
        counts = rebuild(runtime.runner, groups[0])
        for child, group in zip(children, groups[1:], strict=True):
            counts.update(_result(child, group))
    finally:
        for child in children:  # on an error here: a child's unfinished batch rolls back
            if child.poll() is None:
                child.terminate()
                child.wait()
    return {name: counts[name] for name in names}


class RebuildFailed(Exception):
    """A child replay failed; its views stay at the position it reached."""


def _start(config: Config, names: list[str]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-m", "api.rebuild", *names], stdin=PIPE, stdout=PIPE)
    assert child.stdin is not None
    child.stdin.write(pickle.dumps(config))  # a pipe to our own child: no secret on disk
    child.stdin.close()
    return child


def _result(child: subprocess.Popen[bytes], names: list[str]) -> dict[str, int]:
    assert child.stdout is not None
    out = child.stdout.read()
    if child.wait() != 0:
        raise RebuildFailed(
            f"the replay of {', '.join(names)} failed (exit {child.returncode}, its error is above); "
            "those views resume from the position they reached when the projection runner next runs"
        )
    return {name: int(n) for name, n in json.loads(out).items()}


def _rebuild_group(config: Config, names: list[str]) -> dict[str, int]:
    setup_logging(secrets=config.secrets)
    app, views = open_store(config, create_tables=False)  # the parent made them
    try:
        return rebuild(ProjectionRunner(app, views, [ALL_VIEWS[n] for n in names]), names)
    finally:
        views.close()
        app.close()


if __name__ == "__main__":
    print(json.dumps(_rebuild_group(pickle.loads(sys.stdin.buffer.read()), sys.argv[1:])))
