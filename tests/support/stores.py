"""Stores as tests set them up or lose them: an S3 location's configuration, NDJSON read
back, and an event store wiped as if the control plane were lost."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.support.api import PG_URL


def docs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def s3_storage(endpoint: str, bucket: str) -> str:
    return f"""
[storages.s3]
url = "s3://{bucket}/backups/team-a"
endpoint_url = "{endpoint}"
region = "us-east-1"
"""


def wipe_event_store(config, backend: str) -> None:
    """What losing the control plane looks like: no events, no views; storage untouched."""
    if backend == "sqlite":
        for path in config.data_dir.glob("events*"):
            path.unlink()
    else:
        schema = config.database.schema
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
