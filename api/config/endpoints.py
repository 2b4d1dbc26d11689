"""Sources and targets: one table per configured name, its kind and the settings that kind
takes, checked before anything connects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from api.config.checks import ConfigError, require_env
from transfer.sources.registry import EXISTING, KINDS


@dataclass(frozen=True)
class Endpoint:
    """A named source or restore target; `settings` holds the kind's own keys."""

    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    password_env: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.settings["path"])

    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


def _names(spec: dict[str, Any], key: str, where: str, default: list[str]) -> list[str]:
    value = spec.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key} must be a list of names")
    return value


def _existing(spec: dict[str, Any], kind: str, where: str, default: str) -> str:
    existing = spec.get("existing", default)
    if not isinstance(existing, str) or existing not in EXISTING[kind]:
        raise ConfigError(f"{where}.existing must be one of {', '.join(EXISTING[kind])}")
    return existing


def _endpoint(name: str, spec: Any, section: str, base: Path, secrets: list[str]) -> Endpoint:
    where = f"{section}.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table")
    kind = spec.get("kind", "ndjson")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind {kind!r} is not one of {', '.join(KINDS)}")
    pw_env = spec.get("password_env")
    if pw_env is not None:
        secrets.append(require_env(pw_env, where))
    settings: dict[str, Any] = {}
    if kind == "ndjson":
        if not isinstance(spec.get("path"), str):
            raise ConfigError(f"{where}.path must be a directory path")
        settings["path"] = base / spec["path"]
        if section == "targets":
            settings["existing"] = _existing(spec, kind, where, default="replace")
    else:
        url = spec.get("url")
        scheme = "postgresql" if kind == "postgresql" else "mongodb"
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in (
            scheme,
            "postgres" if kind == "postgresql" else "mongodb+srv",
        ):
            raise ConfigError(f"{where}.url must be a {scheme}:// URL")
        if parsed.password:
            raise ConfigError(f"{where}.url must not contain a password: name its variable in password_env")
        if kind == "postgresql" and not parsed.path.strip("/"):
            raise ConfigError(f"{where}.url names no database")
        if kind == "postgresql":  # every libpq parameter of the URL is kept (sslmode, options...)
            from psycopg.conninfo import conninfo_to_dict

            assert isinstance(url, str)  # parsed above: it is a postgresql:// URL
            try:
                conninfo_to_dict(url)
            except Exception as e:  # noqa: BLE001 - libpq's own words for what is wrong
                raise ConfigError(f"{where}.url: {str(e).strip().splitlines()[0]}") from None
        settings["url"] = url
        if kind == "postgresql":
            settings["schemas"] = _names(spec, "schemas", where, ["public"])
        else:
            settings["databases"] = _names(spec, "databases", where, [])
            if section == "sources":  # where the backup reads: a secondary, unless told otherwise
                settings["read_preference"] = spec.get("read_preference", "secondaryPreferred")
            users_and_roles = spec.get("users_and_roles", False)
            if not isinstance(users_and_roles, bool):
                raise ConfigError(f"{where}.users_and_roles must be true or false")
            settings["users_and_roles"] = users_and_roles
        if section == "targets":
            settings["existing"] = _existing(spec, kind, where, default="fail")
            if kind == "mongodb":  # per collection, as mongorestore's numInsertionWorkersPerCollection
                settings["insertion_workers"] = spec.get("insertion_workers", 1)
    if section == "sources" or kind == "postgresql":  # a PostgreSQL target builds indexes in parallel
        parallel = spec.get("parallel", 2)
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 64:
            raise ConfigError(f"{where}.parallel must be an integer from 1 to 64")
        settings["parallel"] = parallel
    if section == "targets" and kind == "postgresql":
        keep = spec.get("keep_owners", False)
        if not isinstance(keep, bool):
            raise ConfigError(f"{where}.keep_owners must be true or false")
        settings["keep_owners"] = keep
    return Endpoint(name, kind, settings, pw_env)


def parse_endpoints(raw: dict[str, Any], section: str, base: Path, secrets: list[str]) -> dict[str, Endpoint]:
    return {name: _endpoint(name, spec, section, base, secrets) for name, spec in raw.items()}
