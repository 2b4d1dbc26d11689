"""Following a run: a live bar on a terminal, plain lines in a pipe, the exit code at its end."""

from __future__ import annotations

import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO
from uuid import UUID

from api.cli.common import (
    _error,
)
from api.cli.tables import _clock, human_duration, human_size
from api.records import Records
from api.runtime import Runtime
from domain.run import COMPLETED, REQUESTED, RUNNING


# --------------------------------------------------------------- progress
def _rate(items: int, nbytes: int, elapsed: float) -> str:
    """Bytes per second; items per second while a run has written no archive bytes yet
    (a backup stages compressed collections before it appends them)."""
    if elapsed <= 0:
        return "-/s"
    if nbytes > 0:
        return f"{human_size(int(nbytes / elapsed))}/s"
    return f"{items / elapsed:,.0f} items/s"


POLL_SECONDS = 0.25  # how often --wait re-reads the run
LINE_SECONDS = 1.0  # plain progress lines at most this often
QUIET_LINE_SECONDS = 30.0  # ...but at least this often, so a slow step does not look hung
NO_WORKER_HINT_SECONDS = 10.0  # a run still requested after this long: say no worker may be running


def _stats(percent: float, items: int, nbytes: int, elapsed: float) -> str:
    rate = _rate(items, nbytes, elapsed)
    if 0 < percent < 100 and elapsed > 0:
        eta = _clock(elapsed * (100 - percent) / percent)
    else:
        eta = "0:00" if percent >= 100 else "--:--"
    return f"{items:,} items  {human_size(nbytes)}  {rate}  ETA {eta}"


def render_progress(percent: float, items: int, nbytes: int, elapsed: float, width: int = 24) -> str:
    """One terminal line: percent, bar, items, bytes, rate and time left."""
    filled = int(width * min(max(percent, 0.0), 100.0) / 100)
    bar = "#" * filled + "-" * (width - filled)
    return f"{percent:5.1f}% [{bar}] {_stats(percent, items, nbytes, elapsed)}"


def progress_line(name: str, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> str:
    """A plain line for logs and pipes."""
    if status == REQUESTED:
        return f"{name} requested: waiting for a worker ({human_duration(elapsed)})"
    return f"{name} {status} {percent:.1f}%  {_stats(percent, items, nbytes, elapsed)}"


class Display(Protocol):
    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None: ...
    def clear(self) -> None: ...


class NoDisplay:
    """Nothing while a run goes on: -o json keeps stdout for its one document."""

    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None:
        pass

    def clear(self) -> None:
        pass


class BarDisplay:
    """A live single line, redrawn in place with \\r on a terminal."""

    def __init__(self, name: str, out: TextIO, columns: int | None = None) -> None:
        self.name, self.out, self.width = name, out, 0
        self.columns = columns or shutil.get_terminal_size().columns

    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None:
        room = max(self.columns - 1, 20)  # a line that wraps is redrawn as two
        if status == REQUESTED:
            line = progress_line(self.name, status, percent, items, nbytes, elapsed)
        else:
            line = f"{self.name} {render_progress(percent, items, nbytes, elapsed)}"
            if len(line) > room:  # the bar gives way first, down to 6 cells
                bar = max(24 - (len(line) - room), 6)
                line = f"{self.name} {render_progress(percent, items, nbytes, elapsed, width=bar)}"
        line = line if len(line) <= room else line[: room - 1] + "…"
        self.out.write("\r" + line.ljust(self.width))
        self.out.flush()
        self.width = len(line)

    def clear(self) -> None:
        """Blanks the line, so a hint or the final line takes its place."""
        if self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()
            self.width = 0


class LineDisplay:
    """Plain lines when something changed, at most once a second (pipes, CI logs)."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name, self.out = name, out
        self.last_at = -QUIET_LINE_SECONDS
        self.last: tuple[Any, ...] | None = None

    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None:
        now = time.monotonic()
        key = (status, percent, items, nbytes)
        since = now - self.last_at
        if since < LINE_SECONDS or (key == self.last and since < QUIET_LINE_SECONDS):
            return
        print(progress_line(self.name, status, percent, items, nbytes, elapsed), file=self.out, flush=True)
        self.last_at, self.last = now, key

    def clear(self) -> None:
        pass


def _pause(seconds: float) -> None:
    """The one place the waiting loops sleep (tests replace it)."""
    time.sleep(seconds)


def _elapsed(run: Any) -> float:
    started = getattr(run, "started_at", None)
    return max(0.0, (datetime.now(UTC) - started).total_seconds()) if started else 0.0


def wait_for_run(runtime: Runtime, kind: str, run_id: UUID | str, quiet: bool = False) -> int:
    """Follows a snapshot or restore to its end; Ctrl-C stops the waiting, not the run.
    `quiet` (-o json): no progress and no completion lines, so stdout holds only the JSON
    answer; the exit code and stderr still say how the run ended."""
    load = runtime.app.get_snapshot if kind == "snapshot" else runtime.app.get_restore
    run = load(run_id)
    out = sys.stdout
    display: Display
    if quiet:
        display = NoDisplay()
    else:
        display = BarDisplay(run.sub_name, out) if out.isatty() else LineDisplay(run.sub_name, out)
    began, hinted = time.monotonic(), False
    try:
        while run.status in (REQUESTED, RUNNING):
            if not hinted and run.status == REQUESTED and time.monotonic() - began >= NO_WORKER_HINT_SECONDS:
                display.clear()
                print(
                    f"snapledger: {run.sub_name} is still waiting after {NO_WORKER_HINT_SECONDS:.0f}s: "
                    "no worker seems to be running (start `snapledger worker` or `snapledger serve`)",
                    file=sys.stderr,
                    flush=True,
                )
                hinted = True
            # While queued, the time shown is how long we have waited for a worker.
            elapsed = time.monotonic() - began if run.status == REQUESTED else _elapsed(run)
            display.update(run.status, run.percent, run.items, run.bytes, elapsed)
            _pause(POLL_SECONDS)
            run = load(run_id)
    except KeyboardInterrupt:
        display.clear()
        print(
            f"stopped waiting; {kind} {run.sub_name} goes on ({run.status}, {run.percent:.0f}%)",
            file=sys.stderr,
        )
        return 130
    display.clear()
    return _run_ended(runtime, kind, run, quiet)


def _run_ended(runtime: Runtime, kind: str, run: Any, quiet: bool) -> int:
    """The completion line, or the error (exit 1) of a failed, stopped or deleted run."""
    runtime.runner.catch_up()
    record = Records(runtime.views).one("backups" if kind == "snapshot" else "restores", str(run.id)) or {}
    elapsed = human_duration(record.get("elapsed_seconds"))
    if run.status != COMPLETED:
        reason = record.get("error") or getattr(run, "reason", None)
        return _error(f"{kind} {run.sub_name} {run.status}" + (f": {reason}" if reason else ""), 1)
    if quiet:
        return 0
    if kind == "snapshot":
        print(
            f"{run.sub_name} completed: {run.items:,} items, {human_size(run.bytes)} in {elapsed} "
            f"-> {record.get('file_name') or run.file_name}"
        )
        return 0
    for name, check in (record.get("consistency") or {}).items():
        found = check.get("would_write", check.get("found"))
        print(f"  {name}: {found} of {check.get('expected')} items {'ok' if check.get('ok') else 'MISMATCH'}")
    schema = record.get("schema") or {}
    for skipped in schema.get("skipped", []):
        print(f"  skipped {skipped['object']}: {skipped['reason']}")
    if schema.get("missing_roles"):
        print(f"  roles the target lacks: {', '.join(schema['missing_roles'])}")
    done = "dry run completed" if run.dry_run else "completed and verified"
    print(f"{run.sub_name} {done}: {run.items:,} items, {human_size(run.bytes)} in {elapsed}")
    return 0
