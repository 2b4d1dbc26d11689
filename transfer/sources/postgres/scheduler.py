"""Data and post-data in parallel, as `pg_restore -j` schedules them: table loads as soon
as their rows are spooled, post-data entries once what they depend on is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from transfer.errors import Stopped, TargetError
from transfer.sources.postgres.apply import Runner
from transfer.sources.postgres.plan import Step, describe


@dataclass
class Load:
    """A table's rows, spooled from the archive, waiting for a free connection."""

    table_id: int
    size: int
    run: Callable[[psycopg.Connection], None]


class Scheduler:
    """pg_restore -j's scheduling over `len(conns)` connections: table loads as soon as
    their rows are spooled, post-data entries as soon as what they depend on is done (a
    table once its rows are in), bigger tables first; an entry that locks a table
    exclusively never runs beside another entry of that table. At most `slots` statements
    run at once, counting a load the archive reader streams itself (`hold()`)."""

    def __init__(
        self,
        steps: list[Step],
        conns: list[psycopg.Connection],
        runner: Runner,
        waits_for_rows: set[int],
        table_ids: set[int],
        size_of: Callable[[int], int],
    ) -> None:
        self.runner = runner
        self.size_of = size_of
        ids = {s.entry.dump_id for s in steps}
        self.deps = {
            s.entry.dump_id: {d for d in s.entry.deps if d in ids or d in waits_for_rows} for s in steps
        }
        # pg_restore: every entry but CREATE INDEX locks the tables it depends on exclusively.
        self.locks = {
            s.entry.dump_id: set() if s.entry.desc == "INDEX" else set(s.entry.deps) & table_ids
            for s in steps
        }
        self.weight = {s.entry.dump_id: max((size_of(d) for d in s.entry.deps), default=0) for s in steps}
        self.pending: list[Step] = sorted(steps, key=lambda s: -self.weight[s.entry.dump_id])
        self.loads: list[Load] = []
        self.done: set[int] = set()
        self.running: dict[int, Step] = {}
        self.busy: dict[int, psycopg.Connection] = {}
        self.held = 0  # statements the archive reader runs itself
        self.slots = len(conns)
        self.error: BaseException | None = None
        self.stopping = False
        self.cond = threading.Condition()
        self.threads = [
            threading.Thread(target=self._work, args=(c,), name=f"restore-{i}", daemon=True)
            for i, c in enumerate(conns)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def rows_loaded(self, table_id: int) -> None:
        with self.cond:
            self.done.add(table_id)
            self.cond.notify_all()

    def add_load(self, load: Load, queue_limit: int) -> None:
        """Waits while `queue_limit` spooled loads are already waiting (so spool files stay
        few), then queues this one."""
        with self.cond:
            while len(self.loads) >= queue_limit and self.error is None and not self.stopping:
                self.cond.wait(0.5)
            self._raise_if_failed()
            self.loads.append(load)
            self.loads.sort(key=lambda item: -item.size)
            self.cond.notify_all()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A slot for a statement run outside the pool (a load streamed straight in)."""
        with self.cond:
            while self._in_use() >= self.slots and self.error is None and not self.stopping:
                self.cond.wait(0.5)
            self._raise_if_failed()
            self.held += 1
        try:
            yield
        finally:
            with self.cond:
                self.held -= 1
                self.cond.notify_all()

    def _in_use(self) -> int:
        return len(self.busy) + self.held

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
        if self.stopping:
            raise Stopped

    def _conflicts(self, step: Step) -> bool:
        mine = self.locks[step.entry.dump_id]
        for other in self.running.values():
            theirs = self.locks[other.entry.dump_id]
            if mine & set(other.entry.deps) or theirs & set(step.entry.deps):
                return True
        return False

    def _next(self) -> Step | Load | None:
        if self._in_use() >= self.slots:
            return None
        step = next(
            (s for s in self.pending if self.deps[s.entry.dump_id] <= self.done and not self._conflicts(s)),
            None,
        )
        load = self.loads[0] if self.loads else None
        if load is not None and (step is None or load.size >= self.weight[step.entry.dump_id]):
            return self.loads.pop(0)
        if step is not None:
            self.pending.remove(step)
        return step

    def _work(self, conn: psycopg.Connection) -> None:
        while True:
            with self.cond:
                while True:
                    if self.stopping or self.error is not None:
                        return
                    item = self._next()
                    if item is not None:
                        break
                    self.cond.wait(0.5)
                if isinstance(item, Step):
                    self.running[item.entry.dump_id] = item
                self.busy[id(conn)] = conn
            try:
                if isinstance(item, Load):
                    item.run(conn)
                else:
                    with conn.transaction():
                        self.runner.run(conn, item)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting restore
                with self.cond:
                    if self.error is None and not self.stopping:
                        self.error = e
                    self.busy.pop(id(conn), None)
                    self.cond.notify_all()
                return
            with self.cond:
                self.busy.pop(id(conn), None)
                if isinstance(item, Load):
                    self.done.add(item.table_id)
                else:
                    self.running.pop(item.entry.dump_id, None)
                    self.done.add(item.entry.dump_id)
                self.cond.notify_all()

    def wait(self, should_stop: Callable[[], bool]) -> None:
        """Until every load and entry ran; a stop or a failure cancels what runs and raises."""
        while True:
            with self.cond:
                if self.error is not None:
                    break
                if not self.pending and not self.running and not self.loads and not self.busy:
                    break
                if not any(t.is_alive() for t in self.threads):
                    stuck = self.pending[0] if self.pending else None
                    what = describe(stuck.entry) if stuck else "a table load"
                    self.error = TargetError(f"restoring {what} never became possible")
                    break
                self.cond.wait(0.25)
            if should_stop():
                self.cancel()
                raise Stopped
        self.cancel()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        with self.cond:
            self.stopping = True
            busy = list(self.busy.values())
            self.cond.notify_all()
        for conn in busy:
            try:
                conn.cancel_safe(timeout=5)
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
        for t in self.threads:
            t.join(timeout=30)
