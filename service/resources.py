"""What a worker runs with: the configured sources, targets and storage locations, the
archive settings, keys and signers, and the redaction every failure reason passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.secrets import redact
from transfer.archive.crypto import Keyring, Signer
from transfer.ports import Source, Target
from transfer.storage import Storage, StorageError
from transfer.storage.health import HealthBoard


@dataclass
class Resources:
    sources: dict[str, Source]
    targets: dict[str, Target]
    storages: dict[str, Storage]
    secrets: list[str] = field(default_factory=list)
    codec: str = "gzip"
    level: int = 6
    keyrings: dict[str, Keyring] = field(default_factory=dict, repr=False)  # per storage location
    signers: dict[str, Signer] = field(default_factory=dict, repr=False)  # per storage location
    health: HealthBoard | None = None

    def usable(self, storage_name: str) -> None:
        """Checks the location before a run, so an unreachable one fails the run at once
        with the reason, rather than leaving it "running" through a retry budget per part."""
        if self.health is None or storage_name not in self.storages:
            return
        health = self.health.check(storage_name)
        if not health.ok:
            raise StorageError(f"storage {storage_name!r} is not usable: {health.error}")

    def redact_all(self, reasons: dict[str, str]) -> dict[str, str]:
        return {name: self.redact(reason) for name, reason in reasons.items()}

    def redact(self, text: str) -> str:
        """Failure reasons become events, which are forever: scrub configured secrets, in
        every spelling they can take (raw, percent-encoded, base64), and make the text
        storable (a lone surrogate from a bad file name would fail the event's encoding)."""
        safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return redact(safe, self.secrets)[:2000]
