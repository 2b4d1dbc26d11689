"""The object-key layout: each name snapledger writes is read back by the same rules."""

from __future__ import annotations

from pathlib import Path

from transfer.storage import layout
from transfer.storage.local import LocalStorage


def test_sidecars_name_their_archive() -> None:
    key = "nightly/nightly-20261201T030000Z-0a1b2c3d.tar"
    assert layout.archive_of_manifest(layout.manifest_key(key)) == key
    assert layout.archive_of_manifest(key) is None
    assert layout.is_sidecar(layout.manifest_key(key)) and layout.is_sidecar(layout.signature_key(key))
    assert not layout.is_sidecar(key)
    assert layout.is_probe(layout.PROBE_PREFIX + "0" * 32) and not layout.is_probe(key)


def test_a_local_write_in_progress_is_known_by_its_name(tmp_path: Path) -> None:
    name = layout.local_partial("a.tar", "0123456789ab")
    assert layout.local_partial_of(name) == "a.tar" and layout.local_partial_of("a.tar") is None
    storage = LocalStorage("local", tmp_path)
    writer = storage.open_writer("p/a.tar")
    writer.write(b"x")
    [partial] = storage.list_partials()
    assert partial.key == "p/a.tar"
    assert list(storage.list_objects()) == []  # not an object until committed
    writer.commit()
    assert [o.key for o in storage.list_objects()] == ["p/a.tar"] and storage.list_partials() == []
