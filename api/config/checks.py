"""What every part of the configuration shares: the error that names the setting, and the
checks for tables and environment variables (credentials are named, never written here).
"""

from __future__ import annotations

import os
from typing import Any

from transfer.archive.crypto import KEY_ID, parse_key


class ConfigError(Exception):
    """The configuration cannot work; the message names the setting."""


def table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table")
    return value


def require_env(var: object, where: str, key: str = "password_env") -> str:
    if not isinstance(var, str) or not var:
        raise ConfigError(f"{where}.{key} must name an environment variable")
    if var not in os.environ:
        raise ConfigError(f"{where}.{key}: environment variable {var} is not set")
    return os.environ[var]


def key_from_env(var: object, where: str, key: str, secrets: list[str]) -> bytes:
    text = require_env(var, where, key=key)
    secrets.append(text.strip())
    try:
        return parse_key(text)
    except ValueError:
        raise ConfigError(
            f"{where}.{key}: the key in {var} must be 32 bytes, as 64 hex digits or base64 "
            "(e.g. from `openssl rand -base64 32`)"
        ) from None


def check_key_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not KEY_ID.match(value):
        raise ConfigError(
            f"{where} must be a key id of 1-64 letters, digits and . _ : - (recorded in each manifest)"
        )
    return value
