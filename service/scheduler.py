"""The scheduler: one snapshot per cron slot of every active scheduled policy, and one
restore drill per slot of every policy's drill schedule.

Any number of schedulers may run (one per serve/worker process): each decides the same
latest slot and appends the same deterministic snapshot id at the policy's version, so
exactly one append wins. Slots missed while everything was down collapse into one run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from domain.application import Snapledger
from domain.schedule import latest_slot

log = logging.getLogger("snapledger.scheduler")


class Scheduler:
    def __init__(
        self,
        app: Snapledger,
        due_policies: Callable[[datetime], list[dict[str, Any]]],
        due_drills: Callable[[datetime], list[dict[str, Any]]] = lambda now: [],
    ) -> None:
        self.app = app
        self.due_policies = due_policies
        self.due_drills = due_drills

    def tick(self, now: datetime) -> list[Any]:
        """Requests the due slot of every policy the view says is due; answers the outcomes."""
        created = []
        for row in self.due_policies(now):
            try:
                slot = latest_slot(row["schedule"], row["timezone"], now)
            except (ValueError, KeyError) as e:
                log.warning("policy %s: cannot read schedule %r: %s", row["id"], row["schedule"], e)
                continue
            outcome = self.app.schedule_snapshot(row["id"], slot)
            if outcome is not None:
                log.info("scheduled snapshot %s of policy %s for %s", outcome.id, row["id"], slot)
                created.append(outcome)
        for row in self.due_drills(now):  # restore drills on their own schedule, the same way
            try:
                schedule = json.loads(row["drill"])["schedule"]
                slot = latest_slot(schedule, row["timezone"], now)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("policy %s: cannot read its drill schedule: %s", row["id"], e)
                continue
            outcome = self.app.schedule_drill(row["id"], slot)
            if outcome is not None:
                log.info("scheduled drill %s of policy %s for %s", outcome.id, row["id"], slot)
                created.append(outcome)
        return created
