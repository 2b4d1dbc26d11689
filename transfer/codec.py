"""Member compression: gzip (the default; readable everywhere) or zstd (faster per byte)."""

from __future__ import annotations

import zlib
from typing import Any

import zstandard

CODECS = ("gzip", "zstd")
LEVELS = {"gzip": (1, 9), "zstd": (1, 19)}
SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
ERRORS: tuple[type[Exception], ...] = (zlib.error, zstandard.ZstdError)


def compressor(codec: str, level: int) -> Any:
    """Answers an object with compress(bytes) and flush(), whichever the codec."""
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=level).compressobj()
    return zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip stream, what gunzip reads


def decompressor(codec: str) -> Any:
    """Answers an object with decompress(bytes) and flush(), whichever the codec."""
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    if codec != "gzip":
        raise ValueError(f"unknown compression {codec!r}")
    return zlib.decompressobj(wbits=31)
