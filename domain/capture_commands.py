"""Commands on a policy's continuous capture: start a window at a snapshot's consistent
point, and read it back. The capture step (service/capture.py) records its segments on the
aggregate and appends them with `record`, fenced by the aggregate's version."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from domain.capture import Capture, capture_id
from domain.errors import InvalidTransition, InvalidValue, NotFound
from domain.ledger import Outcome, check_actor
from domain.run_commands import RunCommands
from domain.snapshot import HAS_ARCHIVE
from domain.values import parse_lsn, parse_moment


class CaptureCommands(RunCommands):
    def start_capture(
        self,
        policy_id: UUID | str,
        snapshot_id: UUID | str,
        slot: str,
        from_position: str,
        from_time: str | None = None,
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
            from_time=from_time,
        )
        return self._commit(capture.id, capture)

    def import_capture(
        self,
        snapshot_id: UUID | str,
        storage: str,
        window: dict[str, Any],
        segments: list[dict[str, Any]],
        actor: str,
    ) -> Outcome:
        """A capture window found in storage (catalog resync): its segments, contiguous
        from the window's start, recorded under the snapshot they follow, and the window
        stopped at once, as nothing here streams it. A rebuilt control plane so restores to
        any moment the bucket holds."""
        actor = check_actor(actor)
        # The slot is the writing installation's: this one must never drop it.
        window = {**window, "slot": "", "imported_from": storage}
        snapshot = self.get_snapshot(snapshot_id)
        if self._exists(capture_id(snapshot.policy_id, snapshot.id)):
            raise InvalidTransition(f"the capture after snapshot {snapshot.sub_name} is already recorded")
        capture = Capture(
            policy_id=snapshot.policy_id,
            snapshot_id=snapshot.id,
            source=snapshot.source,
            storage=storage,
            slot="",
            from_position=str(window["from_position"]),
            from_time=str(window["from_time"]) if window.get("from_time") else None,
        )
        for segment in segments:
            capture.archived(segment)
        capture.stop(
            f"imported from storage {storage!r} by {actor}: no capture of this installation streams it"
        )
        changed: list[Any] = [capture]
        if not (snapshot.point_in_time or {}).get("capture"):
            snapshot.import_window(window)
            changed.append(snapshot)
        return self._commit(capture.id, *changed)

    def has_capture(self, capture_id: UUID) -> bool:
        return self._exists(capture_id)

    def get_capture(self, capture_id: UUID | str) -> Capture:
        return self._get(Capture, capture_id, "capture")

    def restore_to(
        self, policy_id: UUID | str, target: object, options: dict[str, Any], actor: str
    ) -> Outcome:
        """A restore to a moment (`to_time`) or a WAL position (`to_lsn`) of a continuous
        policy: the newest snapshot whose capture window began at or before it, then its
        captured changes up to there. Refused, naming the bounds, when no window holds it."""
        options = dict(options)
        to_time, to_lsn = options.pop("to_time", None), options.pop("to_lsn", None)
        if (to_time is None) == (to_lsn is None):
            raise InvalidValue("give one of to_time and to_lsn", "to_time")
        moment = parse_moment(to_time) if to_time is not None else None
        position = parse_lsn(to_lsn) if to_lsn is not None else None
        try:
            policy = self.get_policy(policy_id)
        except NotFound as e:
            raise NotFound(e.message, "policy_id") from None
        chosen, first = None, None  # newest first: a policy's thousands of snapshots load until one fits
        for sid in reversed(policy.snapshot_ids):
            snap = self.get_snapshot(sid)
            window = (snap.point_in_time or {}).get("capture")
            if snap.status not in HAS_ARCHIVE or not window:
                continue
            first = window
            if position is not None and window.get("kind") == "mongodb":
                raise InvalidTransition(
                    f"policy {policy.name!r} captures a MongoDB oplog, which has no WAL position: "
                    "restore to a time (to_time)"
                )
            starts = window.get("from_time")
            if (moment is not None and starts is not None and datetime.fromisoformat(starts) <= moment) or (
                position is not None and parse_lsn(window["from_position"], "from_position") <= position
            ):
                chosen = (snap, window)
                break
        if first is None:
            raise InvalidTransition(f"policy {policy.name!r} has no snapshot with a capture window")
        if chosen is None:
            raise InvalidTransition(
                f"policy {policy.name!r} is restorable from {first.get('from_time')} "
                f"({first['from_position']}); {to_time or to_lsn} is before that"
            )
        snap, window = chosen
        try:
            capture = self.get_capture(capture_id(policy.id, snap.id))
        except NotFound:
            raise InvalidTransition(
                f"the capture after snapshot {snap.sub_name} has not started yet"
            ) from None
        covered = (
            moment is not None
            and capture.restorable_until is not None
            and datetime.fromisoformat(capture.restorable_until) >= moment
        ) or (position is not None and parse_lsn(capture.checked_lsn, "checked_lsn") >= position)
        if not covered:
            raise InvalidTransition(
                f"changes are archived up to {capture.restorable_until or window.get('from_time')} "
                f"({capture.checked_lsn}); {to_time or to_lsn} is past them"
            )
        moment_facts: dict[str, Any] = {"capture_id": str(capture.id)}
        if moment is not None:
            moment_facts["to_time"] = moment.isoformat()
        else:
            moment_facts["to_lsn"] = to_lsn
        return self.request_restore(snap.id, target, options, actor, point_in_time=moment_facts)
