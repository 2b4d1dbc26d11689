"""Commands on restore drills: ask for one of a policy's newest restorable snapshot, read it
back, stop it. The worker claims a drill as it claims any run (RunCommands.claim_run)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.drill import Drill
from domain.errors import InvalidTransition, InvalidValue, NotFound
from domain.ledger import Ledger, Outcome, check_actor, check_ref
from domain.snapshot import COMPLETED

MAX_CHECKS = 20
MAX_CHECK_LENGTH = 4000


def check_checks(value: object) -> list[str]:
    """A drill's checks: SQL (PostgreSQL) each answering one truthy value on the restored
    copy. Bounded, so a policy cannot carry a script."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise InvalidValue("checks must be a list of non-empty SQL queries", "checks")
    if len(value) > MAX_CHECKS:
        raise InvalidValue(f"checks takes at most {MAX_CHECKS} queries", "checks")
    for index, check in enumerate(value):
        if len(check) > MAX_CHECK_LENGTH:
            raise InvalidValue(
                f"checks[{index}] is longer than {MAX_CHECK_LENGTH} characters", f"checks.{index}"
            )
    return [c.strip() for c in value]


class DrillCommands(Ledger):
    def request_drill(self, policy_id: UUID | str, options: dict[str, Any], actor: str) -> Outcome:
        """A drill of the policy's newest completed snapshot into a throw-away place on
        `target`, with the policy's `checks`. Refused (409) when the policy has none."""
        actor = check_actor(actor)
        target = check_ref(options.get("target"), self.catalog.targets, "target", "drill target")
        checks = check_checks(options.get("checks"))
        try:
            policy = self.get_policy(policy_id)
        except NotFound as e:
            raise NotFound(e.message, "policy_id") from None
        snap = None
        for sid in reversed(policy.snapshot_ids):  # newest first: thousands load until one fits
            found = self.get_snapshot(sid)
            if found.status == COMPLETED and getattr(found, "verification", None) != "unverified":
                snap = found
                break
        if snap is None:
            raise InvalidTransition(f"policy {policy.name!r} has no completed snapshot to drill")
        drill = Drill(
            policy_id=policy.id,
            snapshot_id=snap.id,
            sub_name=snap.sub_name,
            storage=snap.storage,
            archive_key=snap.archive_key,
            target=target,
            checks=checks,
            actor=actor,
        )
        return self._commit(drill.id, drill, extra={"snapshot_id": snap.id, "scratch": drill.scratch})

    def get_drill(self, drill_id: UUID | str) -> Drill:
        return self._get(Drill, drill_id, "drill")

    def stop_drill(self, drill_id: UUID | str, actor: str) -> Outcome:
        actor = check_actor(actor)
        drill = self.get_drill(drill_id)
        drill.request_stop(actor)
        return self._commit(drill.id, drill)
