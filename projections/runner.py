"""Keeps the record views up to date with the event store, exactly once.

Each batch of notifications is applied and its tracking position recorded in one
transaction, guarded by the position the batch started from: a concurrent runner that
already moved a view makes this batch roll back and re-read, never double-apply.
SQLite has no subscription in the library, so the runner polls; on PostgreSQL the
library's LISTEN/NOTIFY subscription wakes it as soon as events are committed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from projections.db import ViewDatabase
from projections.rowbuffer import Rows
from projections.views import ALL_VIEWS, View

log = logging.getLogger("snapledger.projections")

TRACKING_DDL = "CREATE TABLE IF NOT EXISTS view_tracking (view TEXT PRIMARY KEY, position BIGINT NOT NULL)"


VERSIONS_DDL = "CREATE TABLE IF NOT EXISTS view_versions (view TEXT PRIMARY KEY, version BIGINT NOT NULL)"


STANDBY_POLL = 2.0  # seconds between a standby runner's attempts to take the lead


class PositionConflict(Exception):
    """Another runner moved the view while this batch was being applied."""


class ProjectionRunner:
    def __init__(
        self,
        app: Application[Any],
        db: ViewDatabase,
        views: Iterable[View] | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.05,
    ) -> None:
        self.app = app
        self.db = db
        self.views = list(views or ALL_VIEWS.values())
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._advanced = threading.Condition()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self.standby = False
        self.error: BaseException | None = None
        self.on_advance: list[Callable[[], None]] = []  # called after each committed batch
        self.create_tables()

    # ------------------------------------------------------------------ schema
    def create_tables(self) -> None:
        """Creates the views; a view whose shape changed since it was built is dropped and
        replayed from position 0 (views are disposable, events are not).

        Each step commits on its own. A process starting beside running ones must never
        hold one view table's lock while it waits for another's: `CREATE INDEX IF NOT
        EXISTS` locks its table even when the index exists, and a runner's batch holding
        that table while waiting for one this process already locked was a deadlock."""
        with self.db.transaction() as cur:
            cur.execute(TRACKING_DDL)
            cur.execute(VERSIONS_DDL)
        for view in self.views:
            with self.db.transaction() as cur:
                cur.execute("SELECT version FROM view_versions WHERE view = %(view)s", {"view": view.name})
                row = cur.fetchone()
                if row is not None and int(row["version"]) != view.version:
                    log.warning(
                        "view %s changed shape (v%s -> v%s): rebuilding",
                        view.name,
                        row["version"],
                        view.version,
                    )
                    for table in view.tables:
                        cur.execute(f"DROP TABLE IF EXISTS {table}")
                    cur.execute(
                        "UPDATE view_tracking SET position = 0 WHERE view = %(view)s", {"view": view.name}
                    )
                cur.execute(
                    "INSERT INTO view_versions VALUES (%(view)s, %(version)s) "
                    "ON CONFLICT (view) DO UPDATE SET version = excluded.version",
                    {"view": view.name, "version": view.version},
                )
            for statement in view.ddl:  # idempotent (IF NOT EXISTS): one lock at a time
                with self.db.transaction() as cur:
                    cur.execute(statement)
            with self.db.transaction() as cur:
                cur.execute(
                    "INSERT INTO view_tracking VALUES (%(view)s, 0) ON CONFLICT (view) DO NOTHING",
                    {"view": view.name},
                )

    def positions(self) -> dict[str, int]:
        rows = self.db.query("SELECT view, position FROM view_tracking")
        known = {r["view"]: int(r["position"]) for r in rows}
        return {v.name: known.get(v.name, 0) for v in self.views}

    def position(self) -> int:
        """The position every view has reached."""
        return min(self.positions().values(), default=0)

    # -------------------------------------------------------------- processing
    def process_batch(self, views: list[View] | None = None) -> int:
        """Applies the next batch; answers how many notifications it read.

        Concurrent runners must neither double-apply nor deadlock. Where the engine locks
        rows (PostgreSQL), the notifications are read first, outside the view transaction
        (holding view locks while waiting on the event store could wedge against DDL on the
        events table); the transaction then locks the views' tracking rows in name order and
        re-reads the positions under that lock, so runners queue behind one another instead
        of updating the same view rows in different orders, and each applies only what the
        others have not. Where one lock covers the file (SQLite), see `_apply_then_lock`.
        """
        views = views or self.views
        if self.db.dialect == "sqlite":
            read = self._apply_then_lock(views)
        else:
            read = self._lock_then_apply(views)
        if read:
            for moved in self.on_advance:  # before waiters wake: they may read right away
                moved()
            with self._advanced:
                self._advanced.notify_all()
        return read

    def _lock_then_apply(self, views: list[View]) -> int:
        start = min(v for k, v in self.positions().items() if k in {x.name for x in views})
        notifications = self._read(start)
        if not notifications:
            return 0
        with self.db.transaction() as cur:
            before = self._positions_of(cur, views)
            if min(before.values()) < start:
                raise PositionConflict("a view was reset (rebuilt) while this batch was read")
            rows = Rows(cur)
            self._apply(rows, notifications, views, before)
            rows.flush()
            self._advance(cur, views, before, notifications[-1].id)
        return len(notifications)

    def _apply_then_lock(self, views: list[View]) -> int:
        """The handlers run in one read snapshot, without the write lock, which is taken
        only for the batch's writes; then the positions must be those the snapshot showed,
        or the batch is void. That check suffices even if the view was rebuilt back to the
        same position meanwhile: a view's rows are a function of its position, so the
        snapshot's rows are the rows that position stands for."""
        with self.db.snapshot() as (cur, lock):
            before = self._positions_of(cur, views)  # in the snapshot: no lock yet
            notifications = self._read(min(before.values()))
            if not notifications:
                return 0

            def claim() -> None:
                lock()
                if self._positions_of(cur, views) != before:
                    raise PositionConflict("another runner moved a view during this batch")

            rows = Rows(cur, before_write=claim)
            self._apply(rows, notifications, views, before)
            rows.flush()
            rows.writing()  # positions move even when no row changed
            self._advance(cur, views, before, notifications[-1].id)
        return len(notifications)

    def _read(self, start: int) -> Sequence[Notification]:
        return self.app.recorder.select_notifications(
            start=start, limit=self.batch_size, inclusive_of_start=False
        )

    def _apply(
        self, rows: Rows, notifications: Sequence[Notification], views: list[View], before: dict[str, int]
    ) -> None:
        """Each view gets the events past its own position; progress that a later event of
        the same run overwrites is skipped, and an event is decoded only if a view handles it."""
        last = notifications[-1].id
        skip = superseded(notifications)
        decode = self.app.mapper.to_domain_event
        pending = [
            (v.handlers, before[v.name], voided(v, notifications, before[v.name]))
            for v in views
            if before[v.name] < last
        ]
        for n in notifications:
            if n.id in skip:
                continue
            kind, event = kind_of(n.topic), None
            for handlers, applied, void in pending:
                handler = handlers.get(kind)
                if handler is not None and n.id > applied and n.id not in void:
                    event = event or decode(n)
                    handler(rows, event, n.id)

    def _advance(self, cur: Any, views: list[View], before: dict[str, int], last: int) -> None:
        for view in views:
            if before[view.name] >= last:
                continue  # another runner already applied this batch to this view
            cur.execute(
                "UPDATE view_tracking SET position = %(new)s WHERE view = %(view)s AND position = %(old)s",
                {"new": last, "view": view.name, "old": before[view.name]},
            )
            if cur.rowcount != 1:
                raise PositionConflict(view.name)

    def _positions_of(self, cur: Any, views: list[View]) -> dict[str, int]:
        """The views' positions, in name order; on PostgreSQL their rows are locked (FOR UPDATE)."""
        names = sorted(v.name for v in views)
        params = {f"v{i}": name for i, name in enumerate(names)}
        marks = ", ".join(f"%(v{i})s" for i in range(len(names)))
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        cur.execute(
            f"SELECT view, position FROM view_tracking WHERE view IN ({marks}) ORDER BY view{lock}", params
        )
        known = {r["view"]: int(r["position"]) for r in cur.fetchall()}
        return {name: known.get(name, 0) for name in names}

    def catch_up(self, views: list[View] | None = None) -> int:
        """Processes until the views reach the end of the log; answers the count read."""
        total = 0
        while True:
            try:
                n = self.process_batch(views)
            except PositionConflict:
                continue
            if n == 0:
                return total
            total += n

    # ------------------------------------------------------------------ thread
    def start(self, standby: bool = False) -> ProjectionRunner:
        """Applies events in a thread. A `standby` runner applies them only while its
        process holds the views' lead (`ViewDatabase.lead`), so that of many worker
        processes sharing PostgreSQL views one applies each batch, not all of them racing
        for it (which cost every worker a read of every batch and halved the gain of a
        second worker); a standby takes over within `STANDBY_POLL` seconds of the leader
        exiting. The API server's runner never stands by: its own commands wait for it."""
        self.standby = standby
        self._thread = threading.Thread(target=self._loop, name="projection-runner", daemon=True)
        self._thread.start()
        return self

    def _start_listener(self) -> None:
        if self._listener is None and callable(getattr(self.app.recorder, "subscribe", None)):
            if self._can_subscribe():
                self._listener = threading.Thread(target=self._listen, name="projection-listen", daemon=True)
                self._listener.start()

    def _can_subscribe(self) -> bool:
        return type(self.app.recorder).__module__.startswith("eventsourcing.postgres")

    def _listen(self) -> None:
        """Wakes the runner on each committed notification (PostgreSQL LISTEN/NOTIFY)."""
        try:
            with self.app.recorder.subscribe(gt=self.app.recorder.max_notification_id()) as sub:
                self._subscription = sub
                for _ in sub:
                    self._wake.set()
                    if self._stop.is_set():
                        return
        except Exception:  # pragma: no cover - the poll loop still keeps views fresh
            if not self._stop.is_set():
                log.exception("event subscription ended; falling back to polling")

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.standby and not self.db.lead("projections"):
                self._stop.wait(STANDBY_POLL)  # another process applies the events
                continue
            self._start_listener()
            interval = self.poll_interval if self._listener is None else 1.0
            try:
                if self.catch_up() == 0:
                    self._wake.wait(interval)
                    self._wake.clear()
            except Exception as e:
                self.error = e
                log.exception("projection runner failed; retrying in 1s")
                self._stop.wait(1.0)

    def nudge(self) -> None:
        self._wake.set()

    def wait(self, position: int, timeout: float = 5.0) -> bool:
        """Blocks until every view has applied `position`; False on timeout. Without a
        background thread (the CLI) this caller applies the events itself."""
        if self._thread is None:
            self.catch_up()
        deadline = time.monotonic() + timeout
        self.nudge()
        while True:
            if self.position() >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._advanced:
                self._advanced.wait(min(remaining, 0.05))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        sub = getattr(self, "_subscription", None)
        if sub is not None:
            sub.stop()
        if self._thread:
            self._thread.join(timeout=5)
        if self._listener:
            self._listener.join(timeout=5)


@functools.lru_cache(maxsize=256)
def kind_of(topic: str) -> str:
    """The event class name a topic ends with: handlers are registered by it."""
    return topic.rsplit(".", 1)[-1]


# Events whose every effect on every view is overwritten by the same run's next progress
# event: within one batch only the last of a run of them needs applying.
_PROGRESS = ("SnapshotProgressed", "RestoreProgressed", "SnapshotHeartbeat", "RestoreHeartbeat")


def superseded(notifications: Sequence[Any]) -> set[int]:
    """Ids of progress/heartbeat notifications followed, in the batch, by a progress event
    of the same aggregate (which rewrites every column they touch, position included).
    A heartbeat followed by a heartbeat is superseded too; a progress event followed by a
    heartbeat is not (the heartbeat leaves the counters alone)."""
    skip: set[int] = set()
    following: dict[int, str] = {}  # by the UUID's int: hashing a UUID calls Python code
    for n in reversed(notifications):
        kind, key = kind_of(n.topic), n.originator_id.int
        later = following.get(key)
        if later is not None and kind in _PROGRESS:
            if later.endswith("Progressed") or (kind.endswith("Heartbeat") and later == kind):
                skip.add(n.id)
        following[key] = kind
    return skip


def voided(view: View, notifications: Sequence[Any], applied: int) -> frozenset[int] | set[int]:
    """Ids of the batch's events that cannot change what `view` holds after the batch.

    For a view with `ends` (the task queue): every event of an aggregate before one of
    its ends in the batch, since the end deletes the row and nothing writes it again; and
    the end too when the aggregate's start (which creates the row) is in the batch, as the
    row then never existed before it. Events the view already applied (`applied`) are
    left out of the reckoning: a start among them made a row that the end must delete.
    In a replay, most runs start and end in one batch, so the queue's events are mostly
    neither decoded nor handled.
    """
    if not view.ends:
        return frozenset()
    void: set[int] = set()
    ending: dict[int, int] = {}  # aggregate (UUID int) -> id of its last end in the batch
    handled, ends, starts = view.handlers, view.ends, view.starts
    for n in reversed(notifications):
        if n.id <= applied:
            break
        kind = kind_of(n.topic)
        if kind not in handled:
            continue
        key = n.originator_id.int
        end = ending.get(key)
        if end is not None:
            void.add(n.id)
            if kind in starts:
                void.add(end)
        elif kind in ends:
            ending[key] = n.id
    return void


REBUILD_BATCH = 20_000


def partition(names: list[str], jobs: int) -> list[list[str]]:
    """Splits views into at most `jobs` groups for parallel replay. Each group also pays for
    reading and decoding the whole log, so the fewest groups that give the lowest heaviest
    group win: on four jobs, views of cost 4, 2, 2 and 1 make three groups (4, 3, 2), as a
    fourth could not lower the 4."""
    best, best_cost = [list(names)], sum(ALL_VIEWS[n].cost for n in names)
    for k in range(2, min(jobs, len(names)) + 1):
        groups: list[list[str]] = [[] for _ in range(k)]
        costs = [0] * k
        for name in sorted(names, key=lambda n: (-ALL_VIEWS[n].cost, n)):  # heaviest first
            i = costs.index(min(costs))  # onto the lightest group
            groups[i].append(name)
            costs[i] += ALL_VIEWS[name].cost
        if max(costs) < best_cost:
            best, best_cost = groups, max(costs)
    return best


def rebuild(runner: ProjectionRunner, names: list[str]) -> dict[str, int]:
    """Drops and replays the named views; answers how many events each replay read."""
    views = [ALL_VIEWS[n] for n in names]
    with runner.db.transaction() as cur:
        for view in views:
            for table in view.tables:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in view.ddl:
                cur.execute(statement)
            cur.execute("UPDATE view_tracking SET position = 0 WHERE view = %(view)s", {"view": view.name})
    batch, runner.batch_size = runner.batch_size, max(runner.batch_size, REBUILD_BATCH)
    try:
        read = runner.catch_up(views)  # one pass over the log feeds every rebuilt view
    finally:
        runner.batch_size = batch
    return {view.name: read for view in views}
