"""Configuration: one optional TOML file (SNAPLEDGER_CONFIG) plus environment overrides.

Defaults make `snapledger serve` work on a fresh machine: SQLite under ./.snapledger,
storage `local` there, the bundled `demo` NDJSON source and the `scratch` restore target.
Credentials never live here: a password is named by the environment variable holding it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from api.settings import check_shape
from domain.values import is_digits
from transfer.codec import CODECS, LEVELS  # noqa: E402 - plain constants, no I/O
from transfer.crypto import KEY_ID, Keyring, Signer, parse_key

DEMO_DATA = Path(__file__).resolve().parent.parent / "transfer" / "demo_data"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ConfigError(Exception):
    """The configuration cannot work; the message names the setting."""


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


KINDS = ("ndjson", "postgresql", "mongodb")
EXISTING = {
    "ndjson": ("fail", "replace", "append"),
    "postgresql": ("fail", "truncate", "append"),
    "mongodb": ("fail", "drop", "append"),
}


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


@dataclass(frozen=True)
class StorageConfig:
    name: str
    kind: str  # "local" | "s3"
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 4
    path_style: bool = False
    keyring: Keyring | None = None  # client-side encryption keys (its repr shows key ids only)
    signer: Signer | None = None  # signs each manifest, so a catalog sync can trust what it imports
    object_lock: str | None = None  # S3 Object Lock mode archives are written under
    object_lock_days: int = 30  # the lock of snapshots that have no expiry
    sync_interval: float | None = None  # seconds between catalog resyncs of this location


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
        value = _require_env(spec.get("token_env"), where, key="token_env")
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


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table")
    return value


def _require_env(var: object, where: str, key: str = "password_env") -> str:
    if not isinstance(var, str) or not var:
        raise ConfigError(f"{where}.{key} must name an environment variable")
    if var not in os.environ:
        raise ConfigError(f"{where}.{key}: environment variable {var} is not set")
    return os.environ[var]


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
        secrets.append(_require_env(pw_env, where))
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
        if section == "targets":
            settings["existing"] = _existing(spec, kind, where, default="fail")
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


def _endpoints(raw: dict[str, Any], section: str, base: Path, secrets: list[str]) -> dict[str, Endpoint]:
    return {name: _endpoint(name, spec, section, base, secrets) for name, spec in raw.items()}


def _key_from_env(var: object, where: str, key: str, secrets: list[str]) -> bytes:
    text = _require_env(var, where, key=key)
    secrets.append(text.strip())
    try:
        return parse_key(text)
    except ValueError:
        raise ConfigError(
            f"{where}.{key}: the key in {var} must be 32 bytes, as 64 hex digits or base64 "
            "(e.g. from `openssl rand -base64 32`)"
        ) from None


def _key_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not KEY_ID.match(value):
        raise ConfigError(
            f"{where} must be a key id of 1-64 letters, digits and . _ : - (recorded in each manifest)"
        )
    return value


def _keyring(name: str, spec: dict[str, Any], where: str, secrets: list[str]) -> Keyring | None:
    """Keys come from the environment only; the configuration names them by id."""
    for inline in ("encryption_key", "decryption_keys"):
        if inline in spec:
            raise ConfigError(
                f"{where}.{inline}: put keys in environment variables and name them in {inline}_env"
            )
    key_env, key_id = spec.get("encryption_key_env"), spec.get("encryption_key_id")
    old = spec.get("decryption_keys_env", {})
    if key_env is None and key_id is None and not old:
        return None
    keys: dict[str, bytes] = {}
    if key_env is not None or key_id is not None:
        if key_id is None:
            raise ConfigError(f"{where}.encryption_key_id must name the key in encryption_key_env")
        if key_env is None:
            raise ConfigError(f"{where}.encryption_key_env must name the variable holding key {key_id!r}")
        key_id = _key_id(key_id, f"{where}.encryption_key_id")
        keys[key_id] = _key_from_env(key_env, where, "encryption_key_env", secrets)
    if not isinstance(old, dict):
        raise ConfigError(
            f'{where}.decryption_keys_env must be a table of key id = "VARIABLE" (older keys, for reading)'
        )
    for old_id, var in old.items():
        old_id = _key_id(old_id, f"{where}.decryption_keys_env key {old_id!r}")
        if old_id in keys:
            raise ConfigError(f"{where}.decryption_keys_env: {old_id!r} is already the encryption key's id")
        keys[old_id] = _key_from_env(var, where, f"decryption_keys_env.{old_id}", secrets)
    return Keyring(name, key_id, keys)


def _sync_interval(spec: dict[str, Any], where: str) -> float | None:
    value = spec.get("sync_interval_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 10 <= value <= 7 * 86400:
        raise ConfigError(f"{where}.sync_interval_seconds must be a number from 10 to 604800")
    return float(value)


def _storages(raw: dict[str, Any], base: Path, secrets: list[str]) -> dict[str, StorageConfig]:
    out = {}
    for name, spec in raw.items():
        where = f"storages.{name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ConfigError(f"{where}.url must be a local path, file:// or s3://bucket/prefix URL")
        keyring = _keyring(name, spec, where, secrets)
        signer = None
        if "signing_key" in spec:
            raise ConfigError(
                f"{where}.signing_key: put the key in an environment variable and name it in signing_key_env"
            )
        if spec.get("signing_key_env") is not None:
            signer = Signer(name, _key_from_env(spec["signing_key_env"], where, "signing_key_env", secrets))
        url = spec["url"]
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ConfigError(f"{where}.url {url!r} names no bucket")
            endpoint = spec.get("endpoint_url")
            if endpoint is not None and urlparse(endpoint).scheme not in ("http", "https"):
                raise ConfigError(f"{where}.endpoint_url must be an http(s) URL")
            part_mb = spec.get("part_size_mb", 8)
            if isinstance(part_mb, bool) or not isinstance(part_mb, int) or not 5 <= part_mb <= 5120:
                raise ConfigError(f"{where}.part_size_mb must be an integer from 5 to 5120 (S3's limits)")
            concurrency = spec.get("concurrency", 4)
            if (
                isinstance(concurrency, bool)
                or not isinstance(concurrency, int)
                or not 1 <= concurrency <= 32
            ):
                raise ConfigError(f"{where}.concurrency must be an integer from 1 to 32")
            path_style = spec.get("path_style", False)
            if not isinstance(path_style, bool):
                raise ConfigError(f"{where}.path_style must be true or false")
            lock = spec.get("object_lock")
            if lock is not None and lock not in ("compliance", "governance"):
                raise ConfigError(f"{where}.object_lock must be compliance or governance")
            lock_days = spec.get("object_lock_days", 30)
            if isinstance(lock_days, bool) or not isinstance(lock_days, int) or not 1 <= lock_days <= 36500:
                raise ConfigError(f"{where}.object_lock_days must be an integer from 1 to 36500")
            out[name] = StorageConfig(
                name,
                "s3",
                bucket=parsed.netloc,
                prefix=parsed.path.strip("/"),
                endpoint_url=endpoint,
                region=spec.get("region"),
                part_size=part_mb * 1024 * 1024,
                concurrency=concurrency,
                path_style=path_style,
                keyring=keyring,
                signer=signer,
                object_lock=lock,
                object_lock_days=lock_days,
                sync_interval=_sync_interval(spec, where),
            )
        elif parsed.scheme in ("", "file"):
            path = base / (parsed.path if parsed.scheme else url)
            if "object_lock" in spec:
                raise ConfigError(f"{where}.object_lock needs an s3:// location (S3 Object Lock)")
            out[name] = StorageConfig(
                name,
                "local",
                path=path,
                keyring=keyring,
                signer=signer,
                sync_interval=_sync_interval(spec, where),
            )
        else:
            raise ConfigError(f"{where}.url {url!r}: scheme must be file or s3")
    return out


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

    db = _table(raw, "database")
    url = env.get("SNAPLEDGER_DATABASE_URL") or db.get("url") or f"sqlite:///{data_dir / 'events.db'}"
    password_env = db.get("password_env")
    if password_env is not None:
        secrets.append(_require_env(password_env, "database"))
    database = parse_database_url(url, data_dir, password_env)
    if database.kind == "sqlite" and not database.path.is_absolute():  # type: ignore[union-attr]
        database = DatabaseConfig(kind="sqlite", path=base / database.path)  # type: ignore[operator]
    if db.get("encryption_key_env") is not None:
        key = _key_from_env(db["encryption_key_env"], "database", "encryption_key_env", secrets)
        database = replace(database, cipher_key=key)

    sources = {"demo": Endpoint("demo", "ndjson", {"path": DEMO_DATA, "parallel": 2})}
    sources.update(_endpoints(_table(raw, "sources"), "sources", base, secrets))
    targets = {
        "scratch": Endpoint("scratch", "ndjson", {"path": data_dir / "scratch", "existing": "replace"})
    }
    targets.update(_endpoints(_table(raw, "targets"), "targets", base, secrets))
    storages = {"local": StorageConfig("local", "local", path=data_dir / "archives")}
    storages.update(_storages(_table(raw, "storages"), base, secrets))

    archive = _table(raw, "archive")
    codec = archive.get("compression", "gzip")
    if codec not in CODECS:
        raise ConfigError(f"archive.compression must be one of {', '.join(CODECS)}")
    low, high = LEVELS[codec]
    level = archive.get("level", 6 if codec == "gzip" else 3)
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise ConfigError(f"archive.level must be an integer from {low} to {high} for {codec}")
    worker_settings = _worker_settings(_table(raw, "worker"))
    api = _table(raw, "api")
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
