"""Where things live in a storage location: every key snapledger writes, in one place.

    <policy>/<policy>-<UTC time>-<8 hex>.tar   an archive; its key is chosen by the domain
                                               when the snapshot is requested, and recorded
                                               in the events (domain/policy_commands.py)
    <archive>.manifest.json                    its manifest, written last: the commit marker
    <archive>.manifest.sig                     the manifest's HMAC, on a signing location
    <policy>/changes/<policy>-<from>-<to>.changes.gz
                                               a continuous capture's segment of changes
    <segment>.json                             its manifest (the capture it belongs to and
                                               its facts), written last: the commit marker
    <segment>.sig                              the segment manifest's HMAC, on a signing location
    .snapledger-probe/<32 hex>                 a health probe, removed once read back
    <key>.partial-<12 hex>                     a local write in progress (S3 keeps an open
                                               multipart upload instead)

A catalog resync reads a location back through the same rules, so nothing else may parse
or build these names.
"""

from __future__ import annotations

MANIFEST_SUFFIX = ".manifest.json"
SIGNATURE_SUFFIX = ".manifest.sig"
PROBE_PREFIX = ".snapledger-probe/"
LOCAL_PARTIAL = ".partial-"


def manifest_key(archive_key: str) -> str:
    return archive_key + MANIFEST_SUFFIX


def signature_key(archive_key: str) -> str:
    """Where a signing location keeps the HMAC of an archive's manifest."""
    return archive_key + SIGNATURE_SUFFIX


SEGMENT_SUFFIX = ".changes.gz"
SEGMENT_MANIFEST_SUFFIX = ".changes.gz.json"
SEGMENT_SIGNATURE_SUFFIX = ".changes.gz.sig"


def segment_manifest_key(segment_key: str) -> str:
    return segment_key + ".json"


def segment_signature_key(segment_key: str) -> str:
    return segment_key + ".sig"


def is_segment(key: str) -> bool:
    return key.endswith(SEGMENT_SUFFIX)


def segment_of_manifest(key: str) -> str | None:
    """The segment a segment manifest key belongs to; None when `key` is none."""
    return key[: -len(".json")] if key.endswith(SEGMENT_MANIFEST_SUFFIX) else None


def is_probe(key: str) -> bool:
    return key.startswith(PROBE_PREFIX)


def is_sidecar(key: str) -> bool:
    """A manifest or a signature: beside an archive or a segment, never one itself."""
    return key.endswith(
        (MANIFEST_SUFFIX, SIGNATURE_SUFFIX, SEGMENT_MANIFEST_SUFFIX, SEGMENT_SIGNATURE_SUFFIX)
    )


def archive_of_manifest(key: str) -> str | None:
    """The archive a manifest key belongs to; None when `key` is no manifest."""
    return key[: -len(MANIFEST_SUFFIX)] if key.endswith(MANIFEST_SUFFIX) else None


def local_partial(name: str, token: str) -> str:
    """The file name a local write goes to until it is committed."""
    return f"{name}{LOCAL_PARTIAL}{token}"


def local_partial_of(name: str) -> str | None:
    """The key a local unfinished write was writing; None when `name` is none."""
    return name.rsplit(LOCAL_PARTIAL, 1)[0] if LOCAL_PARTIAL in name else None


def changes_key(policy: str, from_position: str, to_position: str) -> str:
    """Where a continuous capture's segment goes: beside its policy's archives, named by the
    positions it spans (fixed width, so names sort as positions do)."""
    return f"{policy}/changes/{policy}-{_position(from_position)}-{_position(to_position)}.changes.gz"


def _position(position: str) -> str:
    """A WAL position (16/B374D848) or an oplog ts (1796142873.11), both 64-bit, as 16 hex
    digits."""
    if "/" in position:
        high, _, low = position.partition("/")
        return f"{int(high, 16):08X}{int(low, 16):08X}"
    seconds, _, increment = position.partition(".")
    return f"{int(seconds):08X}{int(increment):08X}"
