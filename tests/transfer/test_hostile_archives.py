"""Archives read back are believed only after they are checked: names from an archive
(perhaps crafted, perhaps imported by catalog sync) never become paths outside the target,
and a manifest that names members outside the archive's tree is refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from transfer.archive.format import ArchiveError, ArchiveWriter, escape, member_name
from transfer.runs.restore import run_restore
from transfer.runs.verify import verify_archive
from transfer.sources.ndjson import NdjsonTarget
from transfer.storage import LocalStorage
from transfer.storage.layout import manifest_key

HOSTILE = ["../../x", "/etc/passwd", "..", ".", "a\x00b", "tab\there", "ünï/cödé", "con:sole"]


def _archive(storage: LocalStorage, key: str, collections: list[str]) -> None:
    sink = storage.open_writer(key)
    writer = ArchiveWriter(sink)
    for name in collections:
        writer.add_collection(name, [b'{"_id": 1}\n', b'{"_id": 2}\n'])
    manifest, _, _ = writer.finish({"source_kind": "ndjson"})
    sink.commit()
    storage.put_bytes(manifest_key(key), manifest)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_collection_name_stays_one_member_and_one_file_inside_the_target(tmp_path, name):
    storage = LocalStorage("local", tmp_path / "store")
    _archive(storage, "a.tar", [name])
    with tarfile.open(storage.root / "a.tar") as tar:
        members = [m.name for m in tar.getmembers()]
    member = member_name(name)
    assert member in members and member.count("/") == 1 and ".." not in member.split("/")
    assert escape(name) != "" and "/" not in escape(name)
    target_dir = tmp_path / "deep" / "er" / "target"
    result = run_restore(storage, "a.tar", NdjsonTarget("t", target_dir), [], lambda *a: None, lambda: False)
    assert result.collections[name]["ok"]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts]
    assert [p.parent for p in written] == [target_dir], written  # one file, inside the target


def test_a_restore_under_a_hostile_new_name_stays_inside_the_target(tmp_path):
    storage = LocalStorage("local", tmp_path / "store")
    _archive(storage, "a.tar", ["orders"])
    target_dir = tmp_path / "target"
    run_restore(
        storage, "a.tar", NdjsonTarget("t", target_dir), [], lambda *a: None, lambda: False,
        mapping={"orders": "../../escaped"},
    )  # fmt: skip
    assert [p.parent for p in tmp_path.rglob("*.ndjson")] == [target_dir]


@pytest.mark.parametrize("member", ["data/../../x.ndjson.gz", "/abs.ndjson.gz", "data//x.ndjson.gz"])
def test_a_manifest_naming_members_outside_the_archive_is_refused(tmp_path, member):
    """A crafted archive (tar and manifest written by hand) whose members would extract
    outside their directory: verify and restore refuse it before writing anything."""
    storage = LocalStorage("local", tmp_path / "store")
    data = b"x\n"
    import gzip

    packed = gzip.compress(data)
    manifest = {
        "format": "snapledger-archive", "format_version": 2, "compression": "gzip", "source_kind": "ndjson",
        "items": 1,
        "collections": {"x": {"member": member, "items": 1, "raw_bytes": 2, "bytes": len(packed),
                              "sha256": hashlib.sha256(packed).hexdigest()}},
    }  # fmt: skip
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in ((member, packed), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "c.tar").write_bytes(raw.getvalue())
    storage.put_bytes(manifest_key("c.tar"), json.dumps(manifest).encode())
    with pytest.raises(ArchiveError, match="unsafe member"):
        verify_archive(storage, "c.tar")
    target_dir = tmp_path / "target"
    with pytest.raises(ArchiveError, match="unsafe member"):
        run_restore(storage, "c.tar", NdjsonTarget("t", target_dir), [], lambda *a: None, lambda: False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts]


def test_a_name_too_long_for_a_file_fails_the_restore_with_the_reason(tmp_path):
    storage = LocalStorage("local", tmp_path / "store")
    _archive(storage, "a.tar", ["x" * 300])
    with pytest.raises(Exception, match="too long for a file name"):
        run_restore(storage, "a.tar", NdjsonTarget("t", tmp_path / "t"), [], lambda *a: None, lambda: False)
    assert not list(Path(tmp_path / "t").glob("*")) if (tmp_path / "t").exists() else True


_MEASURE = r"""
import json, sys
from pathlib import Path
from transfer.archive.format import ArchiveWriter
from transfer.storage.layout import manifest_key
from transfer.runs.verify import verify_archive
from transfer.storage import LocalStorage

root, codec, lie = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "lie"
storage = LocalStorage("local", root)
sink = storage.open_writer("big.tar")
writer = ArchiveWriter(sink, codec=codec, level=1)
line = b'{"_id": 0, "pad": "' + b"a" * 1000 + b'"}\n'
writer.add_collection("repetitive", (line * 1024 for _ in range(512)))  # 512 MiB of the same line
manifest, _, _ = writer.finish({"source_kind": "ndjson"})
sink.commit()
if lie:  # a crafted manifest: the member claims to inflate to 1 KiB
    data = json.loads(manifest)
    data["collections"]["repetitive"]["raw_bytes"] = 1024
    manifest = json.dumps(data).encode()
storage.put_bytes(manifest_key("big.tar"), manifest)
before = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
try:
    result = verify_archive(storage, "big.tar")
    outcome = f"ok {result.items}"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "peak_mib": peak / 1024, "before_mib": before / 1024}))
"""


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_reading_a_highly_compressed_member_keeps_memory_flat(tmp_path, codec):
    """512 MiB of one repeated line compress to well under 1 MiB: the old reader inflated a
    1 MiB read at once (up to gigabytes). verify's peak stays within 64 MiB of its start."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path), codec, "true"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["outcome"] == f"ok {512 * 1024}", got
    assert got["peak_mib"] - got["before_mib"] < 64, got


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_member_that_inflates_past_its_manifest_is_a_damaged_archive(tmp_path, codec):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path), codec, "lie"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["outcome"].startswith("ArchiveError") and "inflates past the 1024 bytes" in got["outcome"], got
    assert got["peak_mib"] - got["before_mib"] < 64, got


@pytest.mark.parametrize("text", [b"[]", b'"x"', b"3", b"null"])
def test_a_manifest_that_is_json_but_not_an_object_is_refused_as_damaged(text):
    """It raised AttributeError, which the catalog sync does not catch: one such manifest in
    a location stopped the whole sync pass instead of being listed as invalid."""
    from transfer.archive.format import parse_manifest

    with pytest.raises(ArchiveError, match="not a snapledger archive manifest"):
        parse_manifest(text)


def test_an_oplog_in_an_archive_of_another_kind_is_refused_before_anything_is_written():
    """Only MongoDB snapshots carry changes to replay; a manifest that says otherwise is forged."""
    import io

    from transfer.archive.format import read_members
    from transfer.runs.reading import Discard

    manifest = {
        "source_kind": "postgresql",
        "collections": {},
        "oplog": {"member": "dump/oplog.bson.gz", "items": 1, "bytes": 1, "sha256": "0" * 64},
    }
    with pytest.raises(ArchiveError, match="only MongoDB snapshots have"):
        list(read_members(io.BytesIO(b""), manifest, set(), Discard("postgresql"), lambda *a: None))
