"""An S3 bucket and prefix as a storage location: multipart uploads completed on commit and
aborted otherwise, part sizes that grow to reach S3's 5 TiB object limit, ranged reads
that resume, and short, bounded retries."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from transfer.storage.base import ArchiveWriter, Partial, Storage, StorageError, StoredObject

PART_SIZE = 8 * 1024 * 1024


# --------------------------------------------------------------------------- s3
@dataclass(frozen=True)
class S3Retry:
    """Bounds on every request: how long to wait for a connection and for each read of an
    answer, and how many attempts botocore's standard retry mode makes (with its jittered
    backoff) before the run fails. A stalled endpoint therefore costs a bounded time, and
    the run's heartbeats never hold a lease for a request that will not end."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 5


# Transport failures, explained: the reason becomes an event an operator reads.
_TRANSPORT = {
    "EndpointConnectionError": "cannot connect to the endpoint",
    "ConnectTimeoutError": "timed out connecting to the endpoint",
    "ReadTimeoutError": "the endpoint did not answer in time",
    "ConnectionClosedError": "the endpoint closed the connection",
    "ResponseStreamingError": "the connection broke while reading the answer",
    "IncompleteReadError": "the answer was cut short",
    "ProxyConnectionError": "cannot connect to the proxy",
}


def _s3_error(action: str, key: str, exc: Exception) -> StorageError:
    """A clear reason naming the operation, the key and what went wrong (an S3 error code,
    or the transport failure), with the attempts made; never the endpoint's full answer."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code") or type(exc).__name__
        attempts = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
        detail = code if attempts == 1 else f"{code} (after {attempts} attempts)"
    elif type(exc).__name__ in _TRANSPORT:
        detail = f"{type(exc).__name__}: {_TRANSPORT[type(exc).__name__]} (retries exhausted)"
    else:
        detail = type(exc).__name__
    return StorageError(f"S3 {action} of {key!r} failed: {detail}")


MAX_PARTS = 10_000  # S3's limits


MAX_PART = 5 * 1024**3


PARTS_PER_STEP = 1_000


class _S3Writer(ArchiveWriter):
    """Uploads parts on a few threads while the pipeline keeps writing; memory stays at
    part_size x (concurrency + 1) whatever the archive size."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.s3 = storage
        self.key = storage.full_key(key)
        self.version_id: str | None = None  # of the committed object, on a versioned bucket
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.pending: list[Future[dict[str, Any]]] = []
        self.parts: list[dict[str, Any]] = []
        self.pool: ThreadPoolExecutor | None = None
        self.bytes_written = 0

    def part_size(self, number: int) -> int:
        """S3 takes at most 10,000 parts: the size doubles every 1,000 parts (up to S3's
        5 GiB), so from 8 MiB parts an upload reaches S3's 5 TiB object limit."""
        size: int = self.s3.part_size * 2 ** ((number - 1) // PARTS_PER_STEP)  # int ** int is Any to mypy
        return min(size, MAX_PART)

    def _in_flight(self, size: int) -> int:
        """Parts uploading at once, kept to the memory the first parts used."""
        return max(1, min(self.s3.concurrency, self.s3.part_size * self.s3.concurrency // size))

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.bytes_written += len(data)
        size = self.part_size(len(self.parts) + len(self.pending) + 1)
        while len(self.buffer) >= size:
            self._submit(bytes(self.buffer[:size]))
            del self.buffer[:size]
            size = self.part_size(len(self.parts) + len(self.pending) + 1)
        return len(data)

    def _submit(self, body: bytes) -> None:
        client = self.s3.client
        try:
            if self.upload_id is None:
                upload_id = client.create_multipart_upload(Bucket=self.s3.bucket, Key=self.key).get(
                    "UploadId"
                )
                if not upload_id:
                    raise StorageError(f"S3 upload of {self.key!r} failed: the answer carried no upload id")
                self.upload_id = upload_id
                self.pool = ThreadPoolExecutor(self.s3.concurrency, thread_name_prefix="s3-part")
        except StorageError:
            raise
        except Exception as e:
            raise _s3_error("upload", self.key, e) from None
        assert self.pool is not None
        number = len(self.parts) + len(self.pending) + 1
        if number > MAX_PARTS:
            raise StorageError(f"S3 upload of {self.key!r} needs more than {MAX_PARTS} parts")
        self.pending.append(self.pool.submit(self._upload_part, number, body))
        while len(self.pending) >= self._in_flight(len(body)):
            self.parts.append(self.pending.pop(0).result())

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        try:
            etag = self.s3.client.upload_part(
                Bucket=self.s3.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            ).get("ETag")
        except Exception as e:
            raise _s3_error("upload", self.key, e) from None
        if not etag:
            raise StorageError(f"S3 upload of {self.key!r} failed: part {number}'s answer carried no ETag")
        return {"PartNumber": number, "ETag": etag}

    def commit(self) -> None:
        client = self.s3.client
        try:
            if self.upload_id is None:
                answer = client.put_object(Bucket=self.s3.bucket, Key=self.key, Body=bytes(self.buffer))
                self.version_id = answer.get("VersionId")
                return
            if self.buffer:
                self._submit(bytes(self.buffer))
                self.buffer.clear()
            self.parts.extend(f.result() for f in self.pending)
            self.pending.clear()
            answer = client.complete_multipart_upload(
                Bucket=self.s3.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])},
            )
            self.version_id = answer.get("VersionId")
        except StorageError:
            raise
        except Exception as e:
            raise _s3_error("upload", self.key, e) from None
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.buffer.clear()
        if self.pool is not None:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True)
        if self.upload_id is not None:
            try:
                self.s3.client.abort_multipart_upload(
                    Bucket=self.s3.bucket, Key=self.key, UploadId=self.upload_id
                )
            except Exception:  # noqa: BLE001 - best effort; a bucket lifecycle rule cleans up
                pass


class _S3Reader(io.RawIOBase):
    """An object read front to back. botocore retries a request, not a body that breaks
    or stalls half-way; this reader then resumes where it stopped, with a ranged GET
    pinned to the object's ETag (so it never splices two versions together), giving up
    after max_attempts failures in a row."""

    def __init__(self, storage: S3Storage, key: str, version_id: str | None = None) -> None:
        super().__init__()
        self.s3 = storage
        self.key = key
        self.version_id = version_id
        self.position = 0
        self.etag: str | None = None
        self.size: int | None = None
        self.body: Any = None
        self._get()

    def _get(self) -> None:
        extra: dict[str, str] = (
            {"Range": f"bytes={self.position}-", "IfMatch": self.etag} if self.etag else {}
        )
        if self.version_id:
            extra["VersionId"] = self.version_id
        try:
            answer = self.s3.client.get_object(Bucket=self.s3.bucket, Key=self.s3.full_key(self.key), **extra)
        except Exception as e:
            raise _s3_error("download", self.key, e) from None
        if self.etag is None:
            self.etag, self.size = answer.get("ETag"), answer.get("ContentLength")
        self.body = answer["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        failures = 0
        while True:
            if self.size is not None and self.position >= self.size:
                return 0
            try:
                data = self.body.read(len(buffer))
                if not data and self.size is not None:
                    raise _CutShort
            except (BotoCoreError, HTTPError, OSError, _CutShort) as e:
                failures += 1
                if failures >= self.s3.retry.max_attempts:
                    if isinstance(e, _CutShort):
                        raise StorageError(
                            f"S3 download of {self.key!r} failed: the answer was cut short"
                        ) from None
                    raise _s3_error("download", self.key, e) from None
                self.body.close()
                time.sleep(min(0.05 * 2**failures, 2.0))
                self._get()
                continue
            buffer[: len(data)] = data
            self.position += len(data)
            return len(data)

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        super().close()


class _CutShort(Exception):
    """The answer ended before the object's length."""


class S3Storage(Storage):
    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = PART_SIZE,
        concurrency: int = 4,
        path_style: bool = False,
        lock_mode: str | None = None,
        lock_days: int = 30,
        retry: S3Retry | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.name = name
        self.part_size = part_size
        self.concurrency = concurrency
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.lock_mode = lock_mode
        self.lock_days = lock_days
        self.retry = retry or S3Retry()
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": self.retry.max_attempts},
                connect_timeout=self.retry.connect_timeout,
                read_timeout=self.retry.read_timeout,
                s3={"addressing_style": "path" if path_style else "auto"},
                max_pool_connections=max(10, concurrency * 2),
            ),
        )

    def full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def open_writer(self, key: str) -> ArchiveWriter:
        return _S3Writer(self, key)

    def open_reader(self, key: str, version_id: str | None = None) -> IO[bytes]:
        return io.BufferedReader(_S3Reader(self, key, version_id), buffer_size=1 << 20)

    def put_bytes(self, key: str, data: bytes) -> str | None:
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=self.full_key(key), Body=data)
        except Exception as e:
            raise _s3_error("upload", key, e) from None
        version: str | None = answer.get("VersionId")
        return version

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise _s3_error("lookup", key, e) from None
        return True

    def delete(self, key: str) -> None:
        """On a locked location the versions themselves go (a plain delete would only add
        a delete marker and keep the bytes); S3 refuses while the lock holds."""
        full = self.full_key(key)
        try:
            if self.lock_mode is None:
                self.client.delete_object(Bucket=self.bucket, Key=full)
                return
            listing = self.client.list_object_versions(Bucket=self.bucket, Prefix=full)
            for version in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
                if version["Key"] == full:
                    self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version["VersionId"])
        except Exception as e:
            raise _s3_error("delete", key, e) from None

    def check_lock(self) -> None:
        """The bucket answers with these credentials and has Object Lock enabled."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.full_key(""), MaxKeys=1)
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as e:
            raise _s3_error("object lock check", self.bucket, e) from None
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise StorageError(f"bucket {self.bucket!r} does not have Object Lock enabled")

    def lock(self, key: str, until: datetime) -> None:
        """Retention on the current version: neither snapledger nor anyone with the bucket's
        credentials can remove it before `until` (compliance mode)."""
        try:
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self.full_key(key),
                Retention={"Mode": (self.lock_mode or "compliance").upper(), "RetainUntilDate": until},
            )
        except Exception as e:
            raise _s3_error("object lock", key, e) from None

    def cleanup_partials(self, key: str) -> int:
        """Aborts multipart uploads of `key` (a frozen writer's next part then fails)."""
        full = self.full_key(key)
        try:
            uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full).get("Uploads", [])
            for upload in uploads:
                if upload["Key"] == full:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=upload["UploadId"]
                    )
        except Exception as e:
            raise _s3_error("cleanup", key, e) from None
        return sum(1 for u in uploads if u["Key"] == full)

    def list_partials(self) -> list[Partial]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        found = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    found.append(Partial(upload["Key"][strip:], upload["UploadId"], upload["Initiated"]))
        except Exception as e:
            raise _s3_error("listing of uploads", self.prefix or "/", e) from None
        return found

    def remove_partial(self, partial: Partial) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.full_key(partial.key), UploadId=partial.ref
            )
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") != "NoSuchUpload":
                raise _s3_error("abort", partial.key, e) from None

    def list_objects(self) -> Iterator[StoredObject]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(obj["Key"][strip:], int(obj["Size"]))
        except Exception as e:
            raise _s3_error("listing", self.prefix or "/", e) from None

    def presign(self, key: str, file_name: str, expires_seconds: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.full_key(key),
                "ResponseContentDisposition": f'attachment; filename="{file_name}"',
            },
            ExpiresIn=expires_seconds,
        )
        return url

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"
