"""The eventsourcing Application: runs the seed's commands as appends to the event store.

The commands live by what they act on (policy_commands.py, run_commands.py,
import_commands.py); the plumbing they share is ledger.py."""

from __future__ import annotations

from domain.capture_commands import CaptureCommands
from domain.drill_commands import DrillCommands
from domain.import_commands import ImportCommands
from domain.policy_commands import PolicyCommands
from domain.run_commands import RunCommands


class Snapledger(PolicyCommands, CaptureCommands, DrillCommands, RunCommands, ImportCommands):
    """Commands for policies, snapshots, restores, captures and drills; optimistic concurrency throughout."""

    name = "Snapledger"
