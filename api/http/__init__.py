"""The JSON API (Starlette), one module per resource; mutations answer once the record
views show the change."""

from api.http.app import ROUTES, create_app

__all__ = ["ROUTES", "create_app"]
