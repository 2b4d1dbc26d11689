"""The kinds of source and target (ndjson, postgresql, mongodb): what each does with data
already in a target (`existing`), and the object each configured one is built as."""

from __future__ import annotations

from typing import Any

from transfer.ports import Source, Target
from transfer.sources import ndjson
from transfer.sources.mongodb import target as mongodb_target
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.sources.postgres import target as postgres_target

# Each kind's own choices for `existing`, the first being the safe default.
EXISTING: dict[str, tuple[str, ...]] = {
    "ndjson": ndjson.EXISTING,
    "postgresql": postgres_target.EXISTING,
    "mongodb": mongodb_target.EXISTING,
}
KINDS = tuple(EXISTING)


def build_source(endpoint: Any) -> Source:
    source = _source(endpoint)
    source.parallel = endpoint.settings.get("parallel", 2)
    return source


def _source(endpoint: Any) -> Source:
    s = endpoint.settings
    if endpoint.kind == "ndjson":
        return NdjsonSource(endpoint.name, s["path"])
    if endpoint.kind == "postgresql":
        from transfer.sources.postgres.source import PostgresSource

        return PostgresSource(endpoint.name, s["url"], endpoint.password(), s["schemas"])
    if endpoint.kind == "mongodb":
        from transfer.sources.mongodb.source import MongoSource

        return MongoSource(
            endpoint.name,
            s["url"],
            endpoint.password(),
            s["databases"],
            read_preference=s.get("read_preference", "secondaryPreferred"),
            users_and_roles=s.get("users_and_roles", False),
        )
    raise ValueError(f"unknown source kind {endpoint.kind!r}")


def build_target(endpoint: Any) -> Target:
    s = endpoint.settings
    if endpoint.kind == "ndjson":
        return NdjsonTarget(endpoint.name, s["path"], s.get("existing", "replace"))
    if endpoint.kind == "postgresql":
        from transfer.sources.postgres.target import PostgresTarget

        return PostgresTarget(
            endpoint.name,
            s["url"],
            endpoint.password(),
            s["existing"],
            parallel=s.get("parallel", 2),
            keep_owners=s.get("keep_owners", False),
        )
    if endpoint.kind == "mongodb":
        from transfer.sources.mongodb.target import MongoTarget

        return MongoTarget(
            endpoint.name,
            s["url"],
            endpoint.password(),
            s["existing"],
            insertion_workers=s.get("insertion_workers", 1),
            users_and_roles=s.get("users_and_roles", False),
        )
    raise ValueError(f"unknown target kind {endpoint.kind!r}")
