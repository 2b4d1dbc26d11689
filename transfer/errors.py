"""What the data plane's parts raise to each other: sources, targets, pipelines and the
worker all import these from here, so no part imports another just for its exceptions."""

from __future__ import annotations

from typing import Any, NoReturn


class SourceError(Exception):
    """The source cannot be read as configured."""


class TargetError(Exception):
    """The target cannot take this restore as configured."""


class Stopped(Exception):
    """The run noticed a stop (or delete) request and unwound cleanly."""


class AlreadyRestored(Exception):
    """A re-claimed restore whose dead attempt's last transaction the target committed:
    the target holds the whole restore, and this attempt only records it."""

    def __init__(self, notes: dict[str, Any] | None) -> None:
        super().__init__("the previous attempt's restore was committed")
        self.notes = notes


def no_changes_to_replay() -> NoReturn:
    """What a restore session of a kind without an oplog answers `open_changes()` with;
    the archive reader refuses such an archive before it gets here."""
    from transfer.archive.format import ArchiveError

    raise ArchiveError("this archive carries changes to replay, which only MongoDB snapshots have")
