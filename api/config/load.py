"""Configuration: one optional TOML file (SNAPLEDGER_CONFIG) plus environment overrides.

Defaults make `snapledger serve` work on a fresh machine: SQLite under ./.snapledger,
storage `local` there, the bundled `demo` NDJSON source and the `scratch` restore target.
Credentials never live here: a password is named by the environment variable holding it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from api.config.checks import ConfigError, key_from_env, require_env, table
from api.config.database import DatabaseConfig, parse_database_url
from api.config.endpoints import Endpoint, parse_endpoints
from api.config.storages import StorageConfig, parse_storages
from api.settings import check_shape
from domain.values import is_digits
from transfer.archive.codec import CODECS, LEVELS  # noqa: E402 - plain constants, no I/O

DEMO_DATA = Path(__file__).resolve().parents[2] / "transfer" / "sources" / "demo_data"


@dataclass(frozen=True)
class ApiToken:
    """A bearer token's holder: its name becomes the actor on every event it causes."""

    name: str
    role: str  # "viewer" | "operator"
    token: str = field(repr=False)


ROLES = ("viewer", "operator")


def _tokens(raw: Any, secrets: list[str]) -> list[ApiToken]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("api.tokens must be an array of tables ([[api.tokens]])")
    out = []
    for i, spec in enumerate(raw):
        where = f"api.tokens[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table with name, role and token_env")
        name, role = spec.get("name"), spec.get("role")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ConfigError(f"{where}.name must be a non-empty name")
        if role not in ROLES:
            raise ConfigError(f"{where}.role must be viewer or operator")
        if "token" in spec:
            raise ConfigError(f"{where}: put the token in an environment variable and name it in token_env")
        value = require_env(spec.get("token_env"), where, key="token_env")
        if len(value) < 16:
            raise ConfigError(f"{where}: the token in {spec['token_env']} must be at least 16 characters")
        secrets.append(value)
        out.append(ApiToken(name, role, value))
    if len({t.name for t in out}) != len(out):
        raise ConfigError("api.tokens: names must be unique")
    return out


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database: DatabaseConfig
    sources: dict[str, Endpoint]
    targets: dict[str, Endpoint]
    storages: dict[str, StorageConfig]
    host: str = "127.0.0.1"
    port: int = 8000
    presign_seconds: int = 900
    wait_seconds: float = 5.0
    worker: bool = True
    tokens: list[ApiToken] = field(default_factory=list, repr=False)
    max_body_bytes: int = 1 << 20
    shutdown_seconds: float = 10.0  # how long serve waits for open requests after SIGTERM
    worker_settings: dict[str, Any] = field(default_factory=lambda: dict(WORKER_DEFAULTS))
    codec: str = "gzip"
    level: int = 6
    secrets: list[str] = field(default_factory=list, repr=False)


def check_s3_credentials(config: Config) -> None:
    """Fails at startup, not at the first backup, when boto3 finds no credentials."""
    if not any(s.kind == "s3" for s in config.storages.values()):
        return
    import boto3

    if boto3.Session().get_credentials() is None:
        names = ", ".join(n for n, s in config.storages.items() if s.kind == "s3")
        raise ConfigError(f"storage {names}: no AWS credentials found (boto3's usual chain)")


WORKER_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "lease_seconds": 60,
    "concurrency": 1,
    "scheduler": True,
    "scheduler_interval": 5.0,
    "retention_interval": 60.0,
    "health_interval": 60.0,
}


def _worker_settings(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(WORKER_DEFAULTS))
    if unknown:
        raise ConfigError(f"worker.{unknown[0]} is not a worker setting ({', '.join(WORKER_DEFAULTS)})")
    out = {**WORKER_DEFAULTS, **raw}
    for key in ("enabled", "scheduler"):
        if not isinstance(out[key], bool):
            raise ConfigError(f"worker.{key} must be true or false")
    for key, low, high in (("lease_seconds", 2, 3600), ("concurrency", 1, 64)):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or not low <= out[key] <= high:
            raise ConfigError(f"worker.{key} must be an integer from {low} to {high}")
    for key in ("scheduler_interval", "retention_interval", "health_interval"):
        if (
            isinstance(out[key], bool)
            or not isinstance(out[key], int | float)
            or not 0.05 <= out[key] <= 86400
        ):
            raise ConfigError(f"worker.{key} must be a number of seconds from 0.05 to 86400")
    return out


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    path = path or env.get("SNAPLEDGER_CONFIG")
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"configuration file {path}: {e}") from None
        base = Path(path).resolve().parent
    try:
        check_shape(raw)  # unknown keys, types and ranges, every table, before anything else
    except ValueError as e:
        raise ConfigError(f"configuration file {path}: {e}") from None
    data_dir = base / env.get("SNAPLEDGER_DATA_DIR", raw.get("data_dir", ".snapledger"))
    secrets: list[str] = []

    db = table(raw, "database")
    url = env.get("SNAPLEDGER_DATABASE_URL") or db.get("url") or f"sqlite:///{data_dir / 'events.db'}"
    password_env = db.get("password_env")
    if password_env is not None:
        secrets.append(require_env(password_env, "database"))
    database = parse_database_url(url, data_dir, password_env)
    if database.kind == "sqlite" and not database.path.is_absolute():  # type: ignore[union-attr]
        database = DatabaseConfig(kind="sqlite", path=base / database.path)  # type: ignore[operator]
    if db.get("encryption_key_env") is not None:
        key = key_from_env(db["encryption_key_env"], "database", "encryption_key_env", secrets)
        database = replace(database, cipher_key=key)

    sources = {"demo": Endpoint("demo", "ndjson", {"path": DEMO_DATA, "parallel": 2})}
    sources.update(parse_endpoints(table(raw, "sources"), "sources", base, secrets))
    targets = {
        "scratch": Endpoint("scratch", "ndjson", {"path": data_dir / "scratch", "existing": "replace"})
    }
    targets.update(parse_endpoints(table(raw, "targets"), "targets", base, secrets))
    storages = {"local": StorageConfig("local", "local", path=data_dir / "archives")}
    storages.update(parse_storages(table(raw, "storages"), base, secrets))

    archive = table(raw, "archive")
    codec = archive.get("compression", "gzip")
    if codec not in CODECS:
        raise ConfigError(f"archive.compression must be one of {', '.join(CODECS)}")
    low, high = LEVELS[codec]
    level = archive.get("level", 6 if codec == "gzip" else 3)
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise ConfigError(f"archive.level must be an integer from {low} to {high} for {codec}")
    worker_settings = _worker_settings(table(raw, "worker"))
    api = table(raw, "api")
    raw_port = env.get("SNAPLEDGER_PORT")
    if raw_port is not None and (not is_digits(raw_port.strip()) or not 1 <= int(raw_port) <= 65535):
        raise ConfigError(f"SNAPLEDGER_PORT must be a port from 1 to 65535 (got {raw_port!r})")
    try:
        port = int(raw_port if raw_port is not None else api.get("port", 8000))
        presign = int(api.get("presign_seconds", 900))
        max_body = int(api.get("max_body_bytes", 1 << 20))
        wait = float(api.get("wait_seconds", 5.0))
        shutdown = float(api.get("shutdown_seconds", 10.0))
    except (TypeError, ValueError):
        raise ConfigError("api.port, api.presign_seconds and api.wait_seconds must be numbers") from None
    if not 1024 <= max_body <= 1 << 30:
        raise ConfigError("api.max_body_bytes must be between 1024 and 1073741824")
    if not 1 <= presign <= 7 * 86400:
        raise ConfigError("api.presign_seconds must be between 1 and 604800 (S3's limit)")
    return Config(
        data_dir=data_dir,
        database=database,
        sources=sources,
        targets=targets,
        storages=storages,
        host=env.get("SNAPLEDGER_HOST", api.get("host", "127.0.0.1")),
        port=port,
        presign_seconds=presign,
        wait_seconds=wait,
        worker=worker_settings["enabled"],
        tokens=_tokens(api.get("tokens"), secrets),
        max_body_bytes=max_body,
        shutdown_seconds=shutdown,
        secrets=secrets,
        codec=codec,
        level=level,
        worker_settings=worker_settings,
    )
