"""Builds the storage location for a configured `[storages.NAME]` (a local directory or
an S3 bucket and prefix).
"""

from __future__ import annotations

from typing import Any

from transfer.storage import LocalStorage, S3Storage, Storage


def build_storage(spec: Any) -> Storage:
    if spec.kind == "s3":
        return S3Storage(
            spec.name,
            spec.bucket,
            spec.prefix,
            spec.endpoint_url,
            spec.region,
            part_size=spec.part_size,
            concurrency=spec.concurrency,
            path_style=spec.path_style,
            lock_mode=spec.object_lock,
            lock_days=spec.object_lock_days,
        )
    return LocalStorage(spec.name, spec.path)
