"""Storage location health: reachable, writable, credentials valid, checked before each run
and on an interval, so a run fails fast with the reason instead of sitting "running"."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from transfer.storage import Storage, StorageError, layout


@dataclass(frozen=True)
class StorageHealth:
    ok: bool
    checked_at: datetime
    seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def probe(storage: Storage) -> None:
    """Writes, reads back and removes a small object. A location under object lock is
    only listed and asked for its lock configuration: a probe there could not be removed."""
    if storage.lock_mode is not None:
        storage.check_lock()
        return
    key = f"{layout.PROBE_PREFIX}{uuid.uuid4().hex}"
    storage.put_bytes(key, b"snapledger probe")
    try:
        if storage.get_bytes(key) != b"snapledger probe":
            raise StorageError(f"storage location {storage.name!r} returned other bytes than were written")
    finally:
        storage.delete(key)


class HealthBoard:
    """The last check of every location, shared by the worker and the API of one process."""

    def __init__(self, storages: dict[str, Storage]) -> None:
        self.storages = storages
        self._last: dict[str, StorageHealth] = {}
        self._lock = threading.Lock()

    def check(self, name: str) -> StorageHealth:
        started = time.monotonic()
        try:
            probe(self.storages[name])
            health = StorageHealth(True, datetime.now(UTC), time.monotonic() - started)
        except (StorageError, OSError) as e:  # OSError: a local directory that cannot be made
            reason = str(e) if isinstance(e, StorageError) else f"{type(e).__name__}: {e.strerror}"
            health = StorageHealth(False, datetime.now(UTC), time.monotonic() - started, reason)
        with self._lock:
            self._last[name] = health
        return health

    def check_all(self) -> dict[str, StorageHealth]:
        return {name: self.check(name) for name in self.storages}

    def last(self, name: str) -> StorageHealth | None:
        with self._lock:
            return self._last.get(name)
