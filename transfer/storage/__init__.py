"""Storage locations: a local directory or an S3 bucket+prefix, behind one small interface
(base.py), one module per kind."""

from transfer.storage.base import ArchiveWriter, Partial, Storage, StorageError, StoredObject
from transfer.storage.local import LocalStorage
from transfer.storage.s3 import S3Retry, S3Storage

__all__ = [
    "ArchiveWriter",
    "LocalStorage",
    "Partial",
    "S3Retry",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
]
