"""S3 behaviour an operator relies on: multipart in parallel, retries through faults, aborts."""

from __future__ import annotations

import hashlib

import boto3
import pytest

from tests.support.s3proxy import FaultyProxy
from transfer.errors import Stopped
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.storage import S3Storage


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_multipart_parallel_upload_round_trip(s3_endpoint, bucket, big_source, tmp_path):
    storage = S3Storage(
        "s3", bucket, "pre", s3_endpoint, "us-east-1", part_size=5 << 20, concurrency=3, path_style=True
    )
    result = run_backup(
        NdjsonSource("big", big_source), storage, "a/b.tar", [], [], {}, lambda *a: None, lambda: False
    )
    assert result.bytes > 15 << 20  # several parts
    body = _client(s3_endpoint).get_object(Bucket=bucket, Key="pre/a/b.tar")["Body"].read()
    assert len(body) == result.bytes and hashlib.sha256(body).hexdigest() == result.sha256
    restored = run_restore(
        storage, "a/b.tar", NdjsonTarget("t", tmp_path), [], lambda *a: None, lambda: False
    )
    assert restored.items == 40_000
    assert (tmp_path / "events.ndjson").read_bytes() == (big_source / "events.ndjson").read_bytes()


def test_faulty_endpoint_still_yields_a_correct_snapshot(s3_endpoint, bucket, big_source, tmp_path):
    with FaultyProxy(s3_endpoint, fail_every=4) as proxy:
        storage = S3Storage(
            "s3", bucket, "", proxy.url, "us-east-1", part_size=5 << 20, concurrency=2, path_style=True
        )
        result = run_backup(
            NdjsonSource("big", big_source), storage, "f.tar", [], [], {}, lambda *a: None, lambda: False
        )
        restored = run_restore(
            storage, "f.tar", NdjsonTarget("t", tmp_path), [], lambda *a: None, lambda: False
        )
    assert proxy.failed >= 2, "the proxy must really have failed some requests"
    assert restored.items == 40_000
    assert (
        hashlib.sha256((tmp_path / "events.ndjson").read_bytes()).digest()
        == hashlib.sha256((big_source / "events.ndjson").read_bytes()).digest()
    )
    body = _client(s3_endpoint).get_object(Bucket=bucket, Key="f.tar")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.sha256


def test_stopped_upload_is_aborted(s3_endpoint, bucket, big_source):
    storage = S3Storage("s3", bucket, "", s3_endpoint, "us-east-1", part_size=5 << 20, concurrency=2)
    reads = iter(range(10**6))
    with pytest.raises(Stopped):
        run_backup(
            NdjsonSource("big", big_source),
            storage,
            "s.tar",
            [],
            [],
            {},
            lambda *a: None,
            lambda: next(reads) > 25,
        )
    s3 = _client(s3_endpoint)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_part_size_grows_so_that_an_upload_never_needs_more_than_10000_parts():
    """At a fixed 8 MiB an upload failed at part 10,001 (about 78 GiB). Here with 1 KiB
    parts and 15 MB of data: the parts double every 1,000, stay under S3's count, and
    fewer upload at once as they grow (memory stays where the first parts put it)."""
    from concurrent.futures import ThreadPoolExecutor

    from transfer.storage.s3 import _S3Writer

    sizes: list[int] = []

    class Client:
        def create_multipart_upload(self, **kw):
            return {"UploadId": "u"}

        def upload_part(self, **kw):
            sizes.append(len(kw["Body"]))
            return {"ETag": f'"{kw["PartNumber"]}"'}

        def complete_multipart_upload(self, **kw):
            assert [p["PartNumber"] for p in kw["MultipartUpload"]["Parts"]] == list(range(1, len(sizes) + 1))
            return {}

    class Storage:
        bucket, part_size, concurrency, max_attempts = "b", 1024, 4, 3
        client = Client()

        def full_key(self, key):
            return key

    writer = _S3Writer(Storage(), "k")  # type: ignore[arg-type]
    chunk = b"x" * 65536
    for _ in range(15_000_000 // len(chunk)):
        writer.write(chunk)
    writer.commit()
    assert len(sizes) < 10_000 and sum(sizes) == 15_000_000 // len(chunk) * len(chunk)
    assert sizes[0] == 1024 and sizes[999] == 1024 and sizes[1000] == 2048 and sizes[2000] == 4096
    assert writer._in_flight(8192) == 1 and writer._in_flight(1024) == 4
    assert isinstance(writer.pool, ThreadPoolExecutor)
