"""The reliability counts (kills survived, faults injected, requests fuzzed, 5xx seen):
tests report a line each, shown at once with `-s` and again in the run's summary, so the
figures in the README come from a command anyone can rerun."""

from __future__ import annotations

LINES: list[str] = []


def report(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)
