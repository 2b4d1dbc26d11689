"""Counting items in a byte stream without decoding documents.

Newline formats (NDJSON, COPY text) count newlines; BSON walks the little-endian length
prefix of each document, carrying partial prefixes across chunk boundaries.
"""

from __future__ import annotations


class LineCounter:
    def feed(self, chunk: bytes | memoryview) -> int:
        return bytes(chunk).count(b"\n") if isinstance(chunk, memoryview) else chunk.count(b"\n")


class BsonCounter:
    def __init__(self) -> None:
        self.skip = 0  # bytes left of the current document
        self.prefix = b""  # a length prefix split across chunks

    def feed(self, chunk: bytes | memoryview) -> int:
        data = bytes(chunk)
        pos, n, size = 0, 0, len(data)
        while pos < size:
            if self.skip:
                step = min(self.skip, size - pos)
                self.skip -= step
                pos += step
                continue
            need = 4 - len(self.prefix)
            self.prefix += data[pos : pos + need]
            pos += min(need, size - pos)
            if len(self.prefix) == 4:
                length = int.from_bytes(self.prefix, "little")
                if length < 5:
                    raise ValueError(f"invalid BSON document length {length}")
                self.prefix = b""
                self.skip = length - 4
                n += 1
        return n


def counter_for(source_kind: str) -> LineCounter | BsonCounter:
    return BsonCounter() if source_kind == "mongodb" else LineCounter()
