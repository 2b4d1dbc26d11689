"""Member compression: gzip (the default; readable everywhere) or zstd (faster per byte).

gzip streams are made and read with zlib-ng, a maintained rewrite of zlib: the same
deflate format and levels, measured here at twice zlib's speed at level 6 on COPY text,
with slightly smaller output (bench/pg_vs_pg_dump_parallel.py, BENCHMARKS.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

import zstandard
from zlib_ng import zlib_ng

CODECS = ("gzip", "zstd")
LEVELS = {"gzip": (1, 9), "zstd": (1, 19)}
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
_ZLIB_NG_ERROR = cast("type[Exception]", zlib_ng.error)  # the stub declares the class an instance
ERRORS: tuple[type[Exception], ...] = (zlib.error, _ZLIB_NG_ERROR, zstandard.ZstdError)


def compressor(codec: str, level: int) -> Any:
    """Answers an object with compress(bytes) and flush(), whichever the codec."""
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=level).compressobj()
    return zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31)  # 31: a gzip stream, what gunzip reads


def inflate(read: Callable[[int], bytes], codec: str, size: int = 1 << 20) -> Iterator[bytes]:
    """A compressed stream's bytes in pieces of at most `size`, whatever the ratio: one
    small read never becomes gigabytes in memory (a repetitive member, or a bomb)."""
    if codec == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", _Source(read)),  # it only ever calls read(): all _Source has
            read_size=size,
        )
        while piece := reader.read(size):
            yield piece
        return
    if codec != "gzip":
        raise ValueError(f"unknown compression {codec!r}")
    d = zlib_ng.decompressobj(wbits=31)
    while chunk := read(size):
        while chunk:
            piece = d.decompress(chunk, size)
            if piece:
                yield piece
            chunk = d.unconsumed_tail
    tail = d.flush()
    for start in range(0, len(tail), size):
        yield tail[start : start + size]
    if not d.eof:
        raise _ZLIB_NG_ERROR("the gzip stream ends early")


class _Source:
    """A read() callable as the file zstandard's stream_reader wants."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read
