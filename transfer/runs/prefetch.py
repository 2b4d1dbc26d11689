"""Reads ahead on a thread so reading a source and compressing overlap.

Both sides spend their time in C with the GIL released (pipe/file reads, zlib/zstd), so
two threads keep a core each busy; a bounded queue keeps memory at `depth` chunks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(source: Iterator[T], depth: int = 16) -> Iterator[T]:
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    abandoned = threading.Event()

    def offer(item: object) -> bool:
        while not abandoned.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as e:  # handed over, re-raised by the consumer
            offer(e)
        finally:
            if isinstance(source, Generator):
                source.close()  # runs the source's own cleanup (kills psql, closes files) here

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        abandoned.set()
        thread.join(timeout=10)
