"""zstd members and collections compressed in parallel, with nothing left behind on failure."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from api.config import DEMO_DATA, ConfigError, load_config
from transfer.errors import Stopped
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.sources.ndjson import NdjsonSource, NdjsonTarget
from transfer.storage import LocalStorage


def _source(path: Path, parallel: int) -> NdjsonSource:
    source = NdjsonSource("s", path)
    source.parallel = parallel
    return source


@pytest.mark.parametrize("codec,level", [("gzip", 1), ("zstd", 3)])
@pytest.mark.parametrize("parallel", [1, 3])
def test_round_trip_codecs_and_parallelism(tmp_path, codec, level, parallel):
    storage = LocalStorage("l", tmp_path / "a")
    result = run_backup(
        _source(DEMO_DATA, parallel),
        storage,
        "k.tar",
        [],
        [],
        {},
        lambda *a: None,
        lambda: False,
        codec=codec,
        level=level,
        parallel=parallel,
    )
    with tarfile.open(tmp_path / "a" / "k.tar") as tar:
        names = tar.getnames()
    suffix = ".ndjson.gz" if codec == "gzip" else ".ndjson.zst"
    assert sorted(names[:-1]) == sorted(f"data/{c}{suffix}" for c in ("customers", "orders", "products"))
    assert names[-1] == "manifest.json" and result.items == 3650
    run_restore(storage, "k.tar", NdjsonTarget("t", tmp_path / "out"), [], lambda *a: None, lambda: False)
    for name in ("customers", "orders", "products"):
        assert (tmp_path / "out" / f"{name}.ndjson").read_bytes() == (
            DEMO_DATA / f"{name}.ndjson"
        ).read_bytes()


def test_parallel_failure_stops_the_others_and_leaves_nothing(tmp_path, big_source):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.ndjson").symlink_to(big_source / "events.ndjson")
    (src / "broken.ndjson.gz").write_bytes(b"this is not gzip at all")
    storage = LocalStorage("l", tmp_path / "a")
    source = _source(src, 2)
    source.isolated_collections = False  # as PostgreSQL's one transaction: a failure ends the run
    with pytest.raises(OSError):
        run_backup(source, storage, "k.tar", [], [], {}, lambda *a: None, lambda: False, parallel=2)
    assert not [p for p in (tmp_path / "a").rglob("*") if p.is_file()]


def test_parallel_stop(tmp_path, big_source):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        (src / f"{name}.ndjson").symlink_to(big_source / "events.ndjson")
    calls = iter(range(10**6))
    storage = LocalStorage("l", tmp_path / "a")
    with pytest.raises(Stopped):
        run_backup(
            _source(src, 2),
            storage,
            "k.tar",
            [],
            [],
            {},
            lambda *a: None,
            lambda: next(calls) > 10,
            parallel=2,
        )
    assert not [p for p in (tmp_path / "a").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[archive]\ncompression = "lz4"', "archive.compression"),
        ("[archive]\nlevel = 12", "1 to 9"),
        ('[archive]\ncompression = "zstd"\nlevel = 22', "1 to 19"),
        ('[sources.x]\npath = "/x"\nparallel = 0', "parallel"),
    ],
)
def test_archive_settings_are_validated(tmp_path, text, needle):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert needle in str(e.value)
