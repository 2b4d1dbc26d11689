"""Commands on a policy's continuous capture: start a window at a snapshot's consistent
point, and read it back. The capture step (service/capture.py) records its segments on the
aggregate and appends them with `record`, fenced by the aggregate's version."""

from __future__ import annotations

from uuid import UUID

from domain.capture import Capture
from domain.errors import InvalidTransition
from domain.ledger import Ledger, Outcome


class CaptureCommands(Ledger):
    def start_capture(
        self, policy_id: UUID | str, snapshot_id: UUID | str, slot: str, from_position: str
    ) -> Outcome:
        policy = self.get_policy(policy_id)
        snapshot = self.get_snapshot(snapshot_id)
        if policy.continuous is None:
            raise InvalidTransition(f"policy {policy.name!r} has no continuous capture")
        if snapshot.policy_id != policy.id:
            raise InvalidTransition(f"snapshot {snapshot.id} is not one of policy {policy.name!r}")
        capture = Capture(
            policy_id=policy.id,
            snapshot_id=snapshot.id,
            source=policy.source,
            storage=policy.storage,
            slot=slot,
            from_position=from_position,
        )
        return self._commit(capture.id, capture)

    def get_capture(self, capture_id: UUID | str) -> Capture:
        return self._get(Capture, capture_id, "capture")
