"""Commands on restore drills: ask for one of a policy's newest restorable snapshot, read it
back, stop it. The worker claims a drill as it claims any run (RunCommands.claim_run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.drill import Drill
from domain.errors import Conflict, InvalidTransition, NotFound
from domain.ledger import Ledger, Outcome, check_actor, check_ref
from domain.policy import ACTIVE, SCHEDULER_ACTOR
from domain.snapshot import COMPLETED
from domain.values import check_checks


class DrillCommands(Ledger):
    def request_drill(
        self, policy_id: UUID | str, options: dict[str, Any], actor: str, slot: datetime | None = None
    ) -> Outcome:
        """A drill of the policy's newest completed snapshot into a throw-away place on
        `target`, with `checks`; either defaults to the policy's drill setting. Refused
        (409) when the policy has no completed snapshot."""
        actor = check_actor(actor)
        try:
            policy = self.get_policy(policy_id)
        except NotFound as e:
            raise NotFound(e.message, "policy_id") from None
        settings = policy.drill or {}  # the policy's drill setting, where the request says nothing
        if options.get("target") is None and not settings.get("target"):
            raise Conflict(f"policy {policy.name!r} has no drill target: give one", "target")
        target = check_ref(
            options.get("target") or settings.get("target"), self.catalog.targets, "target", "drill target"
        )
        checks = check_checks(
            options["checks"] if options.get("checks") is not None else settings.get("checks")
        )
        self._check_drill_target(target, checks)
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
            slot=slot,
        )
        return self._commit(drill.id, drill, extra={"snapshot_id": snap.id, "scratch": drill.scratch})

    def schedule_drill(self, policy_id: UUID | str, slot: datetime) -> Outcome | None:
        """The scheduler's command for a policy's drill schedule: None when the policy has
        nothing to drill yet, or another scheduler recorded this slot first."""
        try:
            policy = self.get_policy(policy_id)
            if policy.status != ACTIVE or not (policy.drill or {}).get("schedule"):
                return None
            return self.request_drill(policy.id, {}, SCHEDULER_ACTOR, slot=slot)
        except (InvalidTransition, Conflict, IntegrityError, NotFound):
            return None

    def _check_drill_target(self, target: str, checks: list[str]) -> None:
        """Checks are SQL: a drill with checks needs a PostgreSQL target, or it could only
        fail after restoring."""
        kind = self.catalog.target_kinds.get(target)
        if checks and kind is not None and kind != "postgresql":
            raise Conflict(
                f"checks are SQL and run on a PostgreSQL drill target; {target!r} is {kind}", "checks"
            )

    def get_drill(self, drill_id: UUID | str) -> Drill:
        return self._get(Drill, drill_id, "drill")

    def stop_drill(self, drill_id: UUID | str, actor: str) -> Outcome:
        actor = check_actor(actor)
        drill = self.get_drill(drill_id)
        drill.request_stop(actor)
        return self._commit(drill.id, drill)
