"""mongodump's metadata as a restore reads it: a collection's options and its index
specs, turned into what the server takes to create them.
"""

from __future__ import annotations

from typing import Any

from bson import json_util
from pymongo import IndexModel

from transfer.archive.format import ArchiveError


def parse_metadata(collection: str, definition: bytes | None) -> dict[str, Any]:
    if definition is None:
        return {}
    try:
        meta = json_util.loads(definition)
    except (ValueError, TypeError):
        raise ArchiveError(f"collection {collection!r} has unreadable metadata") from None
    if not isinstance(meta, dict):
        raise ArchiveError(f"collection {collection!r} has unreadable metadata")
    return meta


def index_models(specs: list[dict[str, Any]]) -> list[IndexModel]:
    """The dump's index specs minus what the server supplies itself (_id_, version, ns)."""
    models = []
    for spec in specs:
        spec = dict(spec)
        if spec.get("name") == "_id_" or spec.get("clustered"):
            continue
        key = _text_key(spec) or [(k, _direction(v)) for k, v in spec["key"].items()]
        spec.pop("key")
        for drop in ("v", "ns", "background"):
            spec.pop(drop, None)
        models.append(IndexModel(key, **spec))
    return models


def _text_key(spec: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """A text index is listed by its internal key (`_fts: "text", _ftsx: 1`) with its
    fields in `weights`; it is created by naming those fields as "text", as mongorestore
    does, with any plain fields before and after kept in place."""
    key = list(spec["key"].items())
    names = [k for k, _ in key]
    if "_fts" not in names:
        return None
    start, end = names.index("_fts"), names.index("_ftsx") if "_ftsx" in names else names.index("_fts")
    weights = spec.get("weights") or {}
    return [
        *[(k, _direction(v)) for k, v in key[:start]],
        *[(field, "text") for field in weights],
        *[(k, _direction(v)) for k, v in key[end + 1 :]],
    ]


def _direction(value: Any) -> Any:
    """Old shells stored 1.0 for ascending; pymongo takes int, str or document only."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
