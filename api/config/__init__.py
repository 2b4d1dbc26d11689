"""Configuration: one optional TOML file (SNAPLEDGER_CONFIG) plus environment overrides,
checked whole at start-up (`load.py`), one module per part of it."""

from api.config.checks import ConfigError
from api.config.database import DatabaseConfig, parse_database_url
from api.config.endpoints import Endpoint
from api.config.load import DEMO_DATA, ApiToken, Config, check_s3_credentials, load_config
from api.config.storages import StorageConfig

__all__ = [
    "DEMO_DATA",
    "ApiToken",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "Endpoint",
    "StorageConfig",
    "check_s3_credentials",
    "load_config",
    "parse_database_url",
]
