"""Throttles progress so a run of any size records a bounded number of events."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressThrottle:
    """Passes a report on only when percent moved by `min_step` and `interval` passed,
    or when percent jumped by `big_step`: at most 100/min_step reports per run."""

    def __init__(
        self,
        emit: Callable[[int, int, float, str | None], None],
        interval: float = 1.0,
        min_step: float = 1.0,
        big_step: float = 10.0,
    ) -> None:
        self.emit = emit
        self.interval = interval
        self.min_step = min_step
        self.big_step = big_step
        self.last_percent = 0.0
        self.last_time = time.monotonic()
        self.emitted = 0

    def __call__(self, items: int, bytes_: int, percent: float, collection: str | None) -> None:
        moved = percent - self.last_percent
        now = time.monotonic()
        if moved >= self.big_step or (moved >= self.min_step and now - self.last_time >= self.interval):
            self.last_percent = percent
            self.last_time = now
            self.emitted += 1
            self.emit(items, bytes_, percent, collection)
