"""PostgreSQL as a restore target: which session a snapshot gets (the plan-driven one for
schema dumps, the legacy one for archives of format 1) and what `existing` may say.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from transfer.errors import AlreadyRestored, TargetError
from transfer.sources.postgres.connection import connect, log
from transfer.sources.postgres.legacy import LegacySession
from transfer.sources.postgres.session import PostgresRestoreSession, RestoreOptions, app_name
from transfer.storage.base import Partial

EXISTING = ("fail", "truncate", "append")


class PostgresTarget:
    kind = "postgresql"
    transactional = True  # one transaction, or (parallel) everything it created is dropped on failure

    def __init__(
        self,
        name: str,
        url: str,
        password: str | None,
        existing: str,
        parallel: int = 2,
        keep_owners: bool = False,
    ) -> None:
        self.name = name
        self.url = url
        self.password = password
        self.existing = existing
        self.parallel = parallel
        self.keep_owners = keep_owners

    @contextmanager
    def open(
        self,
        source_kind: str,
        existing: str | None = None,
        *,
        format_version: int = 2,
        keep_owners: bool | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_plan: Callable[[dict[str, Any]], None] | None = None,
        resume: dict[str, Any] | None = None,
        run_id: str = "",
        sizes: dict[str, int] | None = None,
        validate: bool = False,  # MongoDB's: PostgreSQL always enforces its constraints
    ) -> Iterator[PostgresRestoreSession | LegacySession]:
        if source_kind != "postgresql":
            raise TargetError(f"target {self.name!r} takes PostgreSQL snapshots, not {source_kind}")
        mode = existing or self.existing
        if format_version < 2:
            conn = connect(self.name, self.url, self.password, "target")
            try:
                with conn.transaction():  # all tables or none
                    yield LegacySession(self, conn, mode)
            finally:
                conn.close()
            return
        run_id = run_id or f"adhoc-{uuid.uuid4().hex}"  # never another restore's name
        opts = RestoreOptions(
            keep_owners=self.keep_owners if keep_owners is None else keep_owners,
            parallel=self.parallel,
            should_stop=should_stop or (lambda: False),
            on_plan=on_plan or (lambda facts: None),
            resume=resume,
            run_id=run_id,
            sizes=sizes or {},
        )
        conn = connect(self.name, self.url, self.password, "target", app_name(run_id))
        session = PostgresRestoreSession(self, conn, mode, opts)
        try:
            yield session
        except AlreadyRestored:
            raise  # nothing to undo: the target holds the whole restore
        except BaseException as e:
            left = session.abort()
            if left:
                log.error("restore into %s left objects it created: %s", self.name, "; ".join(left))
                if isinstance(e, Exception) and not type(e).__name__ == "Stopped":
                    raise TargetError(f"{e} (and cleanup could not remove: {'; '.join(left[:5])})") from e
            raise
        finally:
            session.close()
            conn.close()

    def cleanup_partials(self) -> int:
        return 0  # nothing is written aside; a re-claimed restore cleans up in begin() (resume)

    def list_partials(self) -> list[Partial]:
        return []  # rows land in place: nothing is written aside

    def remove_partial(self, partial: Partial) -> bool:
        return False
