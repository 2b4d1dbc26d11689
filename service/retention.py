"""One retention pass on request: what the maintenance loop does on its interval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from domain.application import Snapledger
from domain.ledger import Outcome
from service.deletion import plan
from service.janitor import Janitor


def retention_pass(
    app: Snapledger, janitor: Janitor, wait: Callable[[int], bool], dry_run: bool = False
) -> Outcome:
    """Deletes what the dry run would list, not a second plan; the views show it before
    this answers."""
    now = datetime.now(UTC)
    ids = janitor.plan(now)
    planned = [app.get_snapshot(i) for i in ids]
    if dry_run:
        return plan(None, planned)
    janitor.sweep(now)
    done = set(janitor.delete(ids))
    position = app.recorder.max_notification_id() or 0
    wait(position)
    return plan(None, [s for s in planned if str(s.id) in done], dry_run=False, position=position)
