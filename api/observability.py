"""Metrics and readiness endpoints (filled in by the observability work)."""

from __future__ import annotations

from starlette.routing import Route

ROUTES: list[Route] = []
