"""The event store's database: a sqlite:// or postgresql:// URL, with libpq's other
parameters kept and any password refused (it is named by password_env instead).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from api.config.checks import ConfigError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DatabaseConfig:
    kind: str  # "sqlite" | "postgresql"
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = ""
    dbname: str = ""
    schema: str = "public"
    password_env: str | None = None
    cipher_key: bytes | None = field(default=None, repr=False)  # encrypts the events' state at rest
    parameters: dict[str, str] = field(default_factory=dict)  # libpq's other keywords: sslmode, ...

    def password(self) -> str:
        return os.environ.get(self.password_env, "") if self.password_env else ""

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user or None,
            dbname=self.dbname,
            password=self.password() or None,
            **self.parameters,
        )


def parse_database_url(url: str, data_dir: Path, password_env: str | None) -> DatabaseConfig:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        if parsed.netloc or not parsed.path.startswith("/") or len(parsed.path) < 2:
            raise ConfigError(
                f"database.url {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return DatabaseConfig(kind="sqlite", path=Path(parsed.path[1:]))
    if parsed.scheme in ("postgresql", "postgres"):
        if parsed.password:
            raise ConfigError(
                "database.url must not contain a password: put it in an environment "
                "variable and name that variable in database.password_env"
            )
        dbname = unquote(parsed.path.lstrip("/"))
        if not dbname:
            raise ConfigError(f"database.url {url!r} names no database")
        query = parse_qs(parsed.query)
        parameters = {k: v[-1] for k, v in query.items() if k != "schema"}
        if parameters:  # every other libpq keyword goes to the event store and the views
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            try:
                conninfo_to_dict(make_conninfo(**parameters))
            except Exception as e:  # noqa: BLE001 - libpq's own words for what is wrong
                raise ConfigError(f"database.url: {str(e).strip().splitlines()[0]}") from None
            if "password" in parameters:
                raise ConfigError("database.url must not carry a password: name its variable in password_env")
        schema = query.get("schema", ["public"])[0]
        if not _IDENT.match(schema):
            raise ConfigError(f"database.url: schema {schema!r} is not a plain identifier")
        try:
            port = parsed.port or 5432
        except ValueError:
            raise ConfigError(f"database.url {url!r} has a bad port") from None
        return DatabaseConfig(
            kind="postgresql",
            host=parsed.hostname or "127.0.0.1",
            port=port,
            user=unquote(parsed.username or "") or os.environ.get("USER", "postgres"),
            dbname=dbname,
            schema=schema,
            password_env=password_env,
            parameters=parameters,
        )
    raise ConfigError(f"database.url {url!r}: scheme must be sqlite or postgresql")
