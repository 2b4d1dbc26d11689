"""Item counting without decoding, across every possible chunk boundary."""

from __future__ import annotations

import random

import pytest

from transfer.archive.items import BsonCounter, LineCounter


def _bson_docs(n: int) -> bytes:
    rnd = random.Random(3)
    out = b""
    for _ in range(n):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        length = 4 + len(body) + 1
        out += length.to_bytes(4, "little") + body + b"\x00"
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 10_000])
def test_bson_counter_any_chunking(chunk):
    data = _bson_docs(50)
    counter = BsonCounter()
    assert sum(counter.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)) == 50
    assert counter.skip == 0 and counter.prefix == b""


def test_bson_counter_rejects_garbage():
    with pytest.raises(ValueError):
        BsonCounter().feed(b"\x01\x00\x00\x00")


def test_line_counter():
    assert LineCounter().feed(b"a\nb\n") == 2 and LineCounter().feed(memoryview(b"\n")) == 1
