"""What the MongoDB source and target share: names (`<db>.<collection>`), connecting with
the password from the environment, errors without it, and raw BSON where the client can.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError

log = logging.getLogger(__name__)


CHUNK = 1024 * 1024


BATCH_DOCS = 1000


BATCH_BYTES = 16 * 1024 * 1024


# The server refuses user documents over 16 MiB; anything much larger is a damaged stream,
# and must not make the writer buffer the rest of the member waiting for it.
MAX_DOCUMENT = 16 * 1024 * 1024 + 16 * 1024


SYSTEM_DATABASES = ("admin", "local", "config")


RAW = CodecOptions(document_class=RawBSONDocument)


SAMPLE = 100


ClientFactory = Callable[..., Any]


def split_name(collection: str) -> tuple[str, str]:
    """Database names cannot contain dots, so the first dot separates db from collection."""
    db, dot, coll = collection.partition(".")
    if not dot or not db or not coll:
        raise ValueError(f"collection {collection!r} is not named <database>.<collection>")
    return db, coll


def connect(factory: ClientFactory, url: str, password: str | None, **options: Any) -> Any:
    """The password travels as a keyword, never inside the URL, so it is in no message."""
    return factory(url, password=password, **options) if password else factory(url, **options)


def redacted(error: BaseException, password: str | None) -> str:
    """A short, secret-free reason: failure reasons become events, which are forever."""
    if isinstance(error, BulkWriteError):
        # Its str() carries the offending documents; the first server message is enough.
        errors = error.details.get("writeErrors") or [{}]
        text = str(errors[0].get("errmsg", "bulk write failed"))
    else:
        text = str(error)
    if password:
        text = text.replace(password, "***")
    return f"{type(error).__name__}: {text[:500]}"


def as_bytes(doc: Any) -> bytes | memoryview:
    """Since pymongo 4.18 a large raw document may be a read-only view of the reply."""
    return doc.raw if isinstance(doc, RawBSONDocument) else bson.encode(doc)


def collection_uuid(info: dict[str, Any]) -> str | None:
    """mongodump writes the collection UUID as hex; mongorestore --preserveUUID reads it."""
    value = (info.get("info") or {}).get("uuid")
    if value is None:
        return None
    return value.hex if isinstance(value, uuid.UUID) else bytes(value).hex()
