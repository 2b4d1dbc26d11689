"""Client-side encryption of archives: AES-256-GCM in fixed-size segments, streamed.

An archive gets its own random 256-bit data key, wrapped (AES key wrap, RFC 3394) by the
storage location's key-encryption key from the environment. Only the key's id is
recorded, in the header below and in the manifest. Format version 1, integers big-endian:

    header  = "SNAPLENC" | version (1 byte) | segment size S (4) | key id length N (1)
              | key id (N bytes, UTF-8) | wrapped data key (40) | nonce prefix (7)
    segment = AES-256-GCM(data key, nonce = prefix | index (4) | last (1), plaintext, aad)
    aad     = header                                   (version 1)
            = header | "snapledger:" archive key NUL snapshot id   (version 2)

Version 2 binds each archive to the key it is stored under and the snapshot that wrote
it: the reader supplies both from the event store, so an archive moved to another key of
the same location, or swapped for another snapshot's, fails authentication. Version 1
archives (before that) still read.

Segments are numbered from 0 and hold S plaintext bytes (S + 16 stored, with the tag),
except the last one: 0 to S bytes, last = 1. Every segment is bound to its place, to the
end of the stream and to the header, so reordering, truncation (even at a segment
boundary) and tampering all fail authentication. Memory stays at about two segments,
whatever the archive size; the writer only writes bytes through, so S3 multipart works
as for a plain archive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from transfer.archive.format import ArchiveError
from transfer.storage import ArchiveWriter

MAGIC = b"SNAPLENC"
VERSION = 2
READABLE = (1, 2)
AEAD_CONTEXT = "archive-key+snapshot-id"  # what the manifest's encryption entry says v2 binds
SEGMENT = 1024 * 1024
TAG = 16
WRAPPED = 40  # a 32-byte key after RFC 3394 wrapping
PREFIX = 7
ALGORITHM = "AES-256-GCM"
KEY_WRAP = "AES-256-KW"
MIN_SEGMENT, MAX_SEGMENT = 16, 64 * 1024 * 1024  # a damaged header must not make us allocate GiBs
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_FIXED = struct.Struct(">8sBIB")  # magic, version, segment size, key id length


class EncryptionKeyError(Exception):
    """The key an encrypted archive needs is not configured, or is not the right key.
    A configuration problem, not damage: the message names the key id and the storage
    location, never key material."""


class DecryptionError(ArchiveError):
    """An encrypted archive is damaged, truncated or was tampered with."""


def parse_key(text: str) -> bytes:
    """A 256-bit key as 64 hex digits or base64; ValueError (without the text) otherwise."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    text = text.replace("-", "+").replace("_", "/")  # the URL-safe alphabet too
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError("a key must be 32 bytes, written as 64 hex digits or base64")
    return key


@dataclass(frozen=True)
class Keyring:
    """One storage location's keys: `key_id` encrypts new archives (None: they are
    written in plaintext); every id in `keys` decrypts, so old archives stay readable
    after a rotation."""

    storage: str
    key_id: str | None
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.key_id is not None and self.key_id not in self.keys:
            raise ValueError(f"key id {self.key_id!r} has no key")

    def __repr__(self) -> str:
        return f"Keyring({self.storage!r}, key_id={self.key_id!r}, ids={sorted(self.keys)})"

    def kek(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise EncryptionKeyError(
                f"the archive is encrypted with key {key_id!r}, which storage location "
                f"{self.storage!r} does not have (configured: {', '.join(sorted(self.keys))}); "
                f"add it to decryption_keys_env"
            ) from None

    def manifest_entry(self, bound: bool = False) -> dict[str, Any]:
        assert self.key_id is not None
        entry = {
            "algorithm": ALGORITHM,
            "key_wrap": KEY_WRAP,
            "key_id": self.key_id,
            "segment_bytes": SEGMENT,
        }
        if bound:
            entry["aad"] = AEAD_CONTEXT
        return entry

    def encrypting(
        self, sink: ArchiveWriter, segment_size: int = SEGMENT, context: bytes = b""
    ) -> EncryptingWriter:
        assert self.key_id is not None
        return EncryptingWriter(sink, self.key_id, self.keys[self.key_id], segment_size, context)


def aead_context(archive_key: str, snapshot_id: str) -> bytes:
    return b"snapledger:" + archive_key.encode() + b"\x00" + snapshot_id.encode()


def require_key(keyring: Keyring | None, storage: str, key_id: str) -> Keyring:
    """Checks, before anything is downloaded, that the location has the archive's key id."""
    if keyring is None or not keyring.keys:
        raise EncryptionKeyError(
            f"the archive is encrypted with key {key_id!r}, but storage location {storage!r} "
            f"has no encryption keys configured (encryption_key_env / decryption_keys_env)"
        )
    keyring.kek(key_id)
    return keyring


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise DecryptionError("archive has more segments than the format allows")
    return prefix + struct.pack(">IB", index, last)


class EncryptingWriter(ArchiveWriter):
    """Seals the bytes written into segments and writes them through to `sink`.

    A full segment is held back until a further byte arrives, because the last segment
    must be marked as such; commit() seals what remains (possibly nothing) as the last.
    `sha256` and `bytes_written` describe the stored ciphertext, i.e. the object a
    download gives."""

    def __init__(
        self, sink: ArchiveWriter, key_id: str, kek: bytes, segment_size: int = SEGMENT, context: bytes = b""
    ) -> None:
        if not MIN_SEGMENT <= segment_size <= MAX_SEGMENT:
            raise ValueError(f"segment size must be {MIN_SEGMENT} to {MAX_SEGMENT} bytes")
        raw_id = key_id.encode()
        if not 0 < len(raw_id) < 256:
            raise ValueError("a key id must be 1 to 255 bytes")
        data_key = AESGCM.generate_key(256)
        self.sink = sink
        self.segment_size = segment_size
        self.prefix = os.urandom(PREFIX)
        self.header = (
            _FIXED.pack(MAGIC, 2 if context else 1, segment_size, len(raw_id))
            + raw_id
            + aes_key_wrap(kek, data_key)
            + self.prefix
        )
        self.aad = self.header + context
        self._aead = AESGCM(data_key)
        self._buffer = bytearray()
        self._index = 0
        self._sealed = False
        self._sha = hashlib.sha256()
        self.bytes_written = 0
        self._out(self.header)

    def _out(self, data: bytes) -> None:
        self._sha.update(data)
        self.bytes_written += len(data)
        self.sink.write(data)

    def _seal(self, plaintext: bytes | memoryview, last: bool) -> None:
        self._out(self._aead.encrypt(_nonce(self.prefix, self._index, last), plaintext, self.aad))
        self._index += 1

    def write(self, data: bytes) -> int:
        self._buffer += data
        size = self.segment_size
        while len(self._buffer) > size:
            with memoryview(self._buffer) as view:
                self._seal(view[:size], last=False)
            del self._buffer[:size]
        return len(data)

    def close(self) -> None:
        """Seals the last segment; the sink stays open (commit() commits it)."""
        if not self._sealed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._sealed = True

    def commit(self) -> None:
        self.close()
        self.sink.commit()

    def abort(self) -> None:
        self._buffer.clear()
        self.sink.abort()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def _read_exact(raw: IO[bytes], n: int) -> bytes:
    """Stream bodies (botocore's among them) may answer short reads before the end."""
    parts, got = [], 0
    while got < n:
        chunk = raw.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class DecryptingReader:
    """A read-only file over an encrypted archive stream, answering plaintext.

    The header is read and the data key unwrapped on construction, so a missing or wrong
    key fails before the caller writes anything. Each segment is authenticated before
    any of its bytes are answered."""

    def __init__(
        self, raw: IO[bytes], keyring: Keyring, expected_key_id: str | None = None, context: bytes = b""
    ) -> None:
        self.raw = raw
        fixed = _read_exact(raw, _FIXED.size)
        if len(fixed) < _FIXED.size or fixed[: len(MAGIC)] != MAGIC:
            raise DecryptionError("the archive is not an encrypted snapledger archive (no SNAPLENC header)")
        _, version, size, id_len = _FIXED.unpack(fixed)
        if version not in READABLE:
            raise DecryptionError(f"encryption format version {version} is not one this snapledger reads")
        if version >= 2 and not context:
            raise DecryptionError(
                "the encrypted archive is bound to its key and snapshot, and was read without them"
            )
        if not MIN_SEGMENT <= size <= MAX_SEGMENT or id_len == 0:
            raise DecryptionError("the encrypted archive's header is damaged")
        rest = _read_exact(raw, id_len + WRAPPED + PREFIX)
        if len(rest) < id_len + WRAPPED + PREFIX:
            raise DecryptionError("the encrypted archive is truncated inside its header")
        self.header = fixed + rest
        self.aad = self.header + (context if version >= 2 else b"")
        try:
            self.key_id = rest[:id_len].decode()
        except UnicodeDecodeError:
            raise DecryptionError("the encrypted archive's header is damaged (key id)") from None
        if expected_key_id is not None and self.key_id != expected_key_id:
            raise DecryptionError(
                f"the archive's header names key {self.key_id!r} but its manifest names {expected_key_id!r}"
            )
        try:
            data_key = aes_key_unwrap(keyring.kek(self.key_id), rest[id_len : id_len + WRAPPED])
        except InvalidUnwrap:
            raise EncryptionKeyError(
                f"the key configured as {self.key_id!r} for storage location {keyring.storage!r} "
                f"does not decrypt this archive: it is not the key the archive was written with "
                f"(or the archive's header is damaged)"
            ) from None
        self._aead = AESGCM(data_key)
        self._prefix = rest[id_len + WRAPPED :]
        self._stored = size + TAG
        self._pending = bytearray()  # ciphertext read ahead, to tell the last segment
        self._plain = memoryview(b"")
        self._index = 0
        self._done = False

    def _next_segment(self) -> None:
        want = self._stored + 1  # one byte beyond a full segment says it is not the last
        while len(self._pending) < want:
            chunk = self.raw.read(want - len(self._pending))
            if not chunk:
                break
            self._pending += chunk
        last = len(self._pending) <= self._stored
        sealed = bytes(self._pending[: self._stored])
        del self._pending[: len(sealed)]
        index = self._index
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, index, last), sealed, self.aad)
        except InvalidTag:
            raise self._failure(sealed, index, last) from None
        self._plain = memoryview(plain)
        self._index += 1
        self._done = last

    def _failure(self, sealed: bytes, index: int, last: bool) -> DecryptionError:
        if last and len(sealed) == self._stored:
            try:  # a whole segment that is not the last: the stream was cut after it
                self._aead.decrypt(_nonce(self._prefix, index, False), sealed, self.aad)
                return DecryptionError(f"the encrypted archive is truncated: it ends after segment {index}")
            except InvalidTag:
                pass
        if last and not sealed:
            return DecryptionError(f"the encrypted archive is truncated: it ends before segment {index}")
        return DecryptionError(
            f"the encrypted archive is damaged, was tampered with, or is not this snapshot's: "
            f"segment {index} fails authentication"
        )

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        got = 0
        while n < 0 or got < n:
            if not self._plain:
                if self._done:
                    break
                self._next_segment()
                continue
            take = len(self._plain) if n < 0 else min(n - got, len(self._plain))
            out.append(bytes(self._plain[:take]))
            self._plain = self._plain[take:]
            got += take
        return b"".join(out)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignatureError(ArchiveError):
    """A manifest's signature is missing or does not match: it was written without the
    location's signing key, or changed since."""


SIGNATURE = "HMAC-SHA256"


@dataclass(frozen=True)
class Signer:
    """A location's signing key: each manifest (which holds every member's SHA-256) gets
    an HMAC beside it, so a catalog sync can tell the archives this location's writers
    made from anything else put there."""

    storage: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Signer({self.storage!r})"

    def _mac(self, manifest: bytes) -> str:
        return hmac.new(self.key, manifest, hashlib.sha256).hexdigest()

    def sign(self, manifest: bytes) -> bytes:
        return json.dumps({"algorithm": SIGNATURE, "signature": self._mac(manifest)}).encode()

    def check(self, manifest: bytes, signature: bytes | None, where: str) -> None:
        if signature is None:
            raise SignatureError(
                f"{where} has no signature, and location {self.storage!r} signs its manifests"
            )
        try:
            found = json.loads(signature)
            mac = str(found["signature"]) if found.get("algorithm") == SIGNATURE else ""
        except (ValueError, KeyError, TypeError, AttributeError):
            mac = ""
        if not hmac.compare_digest(mac, self._mac(manifest)):
            raise SignatureError(
                f"{where}: the signature does not match its manifest (changed, or signed elsewhere)"
            )
