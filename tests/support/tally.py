"""The reliability counts (kills survived, faults injected, requests fuzzed, 5xx seen):
tests report a line each, shown at once with `-s` and again in the run's summary, so the
figures in the README come from a command anyone can rerun.

The suite runs in several processes (pytest-xdist), so lines go to a file the main
process names in SNAPLEDGER_TALLY_FILE before the workers start, and reads at the end.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "SNAPLEDGER_TALLY_FILE"


def start() -> None:
    """In the main process: a fresh file for this run (workers inherit the variable)."""
    if ENV not in os.environ:
        fd, path = tempfile.mkstemp(prefix="snapledger-tally-", suffix=".txt")
        os.close(fd)
        os.environ[ENV] = path


def report(line: str) -> None:
    print(line, flush=True)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:  # one short append per line: atomic enough
            out.write(line.replace("\n", " ") + "\n")


def lines() -> list[str]:
    path = os.environ.get(ENV)
    if not path or not Path(path).exists():
        return []
    return Path(path).read_text(encoding="utf-8").splitlines()


def finish() -> None:
    path = os.environ.get(ENV)
    if path:
        Path(path).unlink(missing_ok=True)
