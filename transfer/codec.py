"""Member compression: gzip (the default; readable everywhere) or zstd (faster per byte).

gzip streams are made and read with zlib-ng, a maintained rewrite of zlib: the same
deflate format and levels, measured here at twice zlib's speed at level 6 on COPY text,
with slightly smaller output (bench/pg_vs_pg_dump_parallel.py, BENCHMARKS.md).
"""

from __future__ import annotations

import zlib
from typing import Any

import zstandard
from zlib_ng import zlib_ng

CODECS = ("gzip", "zstd")
LEVELS = {"gzip": (1, 9), "zstd": (1, 19)}
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
ERRORS: tuple[type[Exception], ...] = (zlib.error, zlib_ng.error, zstandard.ZstdError)


def compressor(codec: str, level: int) -> Any:
    """Answers an object with compress(bytes) and flush(), whichever the codec."""
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=level).compressobj()
    return zlib_ng.compressobj(level, zlib_ng.DEFLATED, 31)  # 31: a gzip stream, what gunzip reads


def decompressor(codec: str) -> Any:
    """Answers an object with decompress(bytes) and flush(), whichever the codec."""
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    if codec != "gzip":
        raise ValueError(f"unknown compression {codec!r}")
    return zlib_ng.decompressobj(wbits=31)
