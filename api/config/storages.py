"""Storage locations (a local directory or an S3 bucket and prefix) with their keys,
signers, object lock and resync interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from api.config.checks import ConfigError, check_key_id, key_from_env
from transfer.archive.crypto import Keyring, Signer


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
        key_id = check_key_id(key_id, f"{where}.encryption_key_id")
        keys[key_id] = key_from_env(key_env, where, "encryption_key_env", secrets)
    if not isinstance(old, dict):
        raise ConfigError(
            f'{where}.decryption_keys_env must be a table of key id = "VARIABLE" (older keys, for reading)'
        )
    for old_id, var in old.items():
        old_id = check_key_id(old_id, f"{where}.decryption_keys_env key {old_id!r}")
        if old_id in keys:
            raise ConfigError(f"{where}.decryption_keys_env: {old_id!r} is already the encryption key's id")
        keys[old_id] = key_from_env(var, where, f"decryption_keys_env.{old_id}", secrets)
    return Keyring(name, key_id, keys)


def _sync_interval(spec: dict[str, Any], where: str) -> float | None:
    value = spec.get("sync_interval_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 10 <= value <= 7 * 86400:
        raise ConfigError(f"{where}.sync_interval_seconds must be a number from 10 to 604800")
    return float(value)


def parse_storages(raw: dict[str, Any], base: Path, secrets: list[str]) -> dict[str, StorageConfig]:
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
            signer = Signer(name, key_from_env(spec["signing_key_env"], where, "signing_key_env", secrets))
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
