"""The record views: how each event changes Policies, Backup Records, Restore Records and
the task queue, one module per view (base.py says what a view is made of)."""

from __future__ import annotations

from projections.views.backups import backups
from projections.views.base import View, iso
from projections.views.policies import policies
from projections.views.restores import restores
from projections.views.tasks import tasks

ALL_VIEWS: dict[str, View] = {v.name: v for v in (policies, backups, restores, tasks)}

__all__ = ["ALL_VIEWS", "View", "backups", "iso", "policies", "restores", "tasks"]
