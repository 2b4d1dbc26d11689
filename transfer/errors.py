"""What the data plane's parts raise to each other: sources, targets, pipelines and the
worker all import these from here, so no part imports another just for its exceptions."""

from __future__ import annotations

from typing import Any


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
