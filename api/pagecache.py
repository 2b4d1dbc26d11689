"""Rendered list pages, reused while the record views have not moved.

A page depends only on view rows, and view rows change only together with the views'
tracking positions (one transaction), whichever process applied the events. So the
positions are the page's version: read them first, then the rows; a page cached under
positions P holds rows at P or newer, never older.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from projections.db import ViewDatabase


class PageCache:
    def __init__(self, views: ViewDatabase, size: int = 256) -> None:
        self.views = views
        self.size = size
        self._pages: OrderedDict[Hashable, tuple[tuple, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _version(self) -> tuple:
        rows = self.views.query("SELECT view, position FROM view_tracking")
        return tuple(sorted((r["view"], int(r["position"])) for r in rows))

    def get(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        version = self._version()
        with self._lock:
            hit = self._pages.get(key)
            if hit is not None and hit[0] == version:
                self._pages.move_to_end(key)
                return hit[1]
        body = render()
        with self._lock:
            self._pages[key] = (version, body)
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return body
