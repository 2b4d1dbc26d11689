"""The record views as rows, and the check every fault test ends with: the views built live
equal a rebuild from the events."""

from __future__ import annotations

from typing import Any

from api.runtime import Runtime
from projections.runner import rebuild
from projections.views import ALL_VIEWS


def view_rows(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    return {v.table: runtime.views.query(f"SELECT * FROM {v.table} ORDER BY id") for v in ALL_VIEWS.values()}


def assert_views_equal_rebuild(runtime: Runtime) -> None:
    runtime.runner.catch_up()
    live = view_rows(runtime)
    rebuild(runtime.runner, list(ALL_VIEWS))
    assert view_rows(runtime) == live
