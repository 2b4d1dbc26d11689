"""A PostgreSQL snapshot restores the whole database it came from, as pg_dump would.

Against the real server: a fixture database with every kind of schema object
(tests/fixtures/pg_everything.sql) is backed up and restored, and the restored database
must give the same `pg_dump --schema-only`, the same rows, the same sequence values, and
behave the same (defaults, keys, triggers, materialized views).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import pgdb
from transfer.archive.format import ArchiveError
from transfer.errors import SourceError, Stopped, TargetError
from transfer.runs.backup import run_backup
from transfer.runs.restore import run_restore
from transfer.runs.verify import verify_archive
from transfer.sources.postgres.source import PostgresSource
from transfer.sources.postgres.target import PostgresTarget
from transfer.storage import LocalStorage
from transfer.storage.layout import manifest_key

KEY = "pg/everything.tar"


@pytest.fixture(scope="module")
def snapshot(
    tmp_path_factory: pytest.TempPathFactory, pg_reason: str | None
) -> Iterator[tuple[str, LocalStorage]]:
    """The fixture database and one snapshot of it, shared by the tests of this module
    (each restores into databases of its own)."""
    if pg_reason:
        if os.environ.get("CI"):
            pytest.fail(pg_reason)
        pytest.skip(pg_reason)
    storage = LocalStorage("local", tmp_path_factory.mktemp("pg-archives"))
    with pgdb.databases("src") as (src,):
        pgdb.load_fixture(src)
        source = PostgresSource("everything", pgdb.url(src), None, pgdb.SCHEMAS)
        run_backup(source, storage, KEY, [], [], {}, lambda *a: None, lambda: False)
        yield src, storage


def _restore(storage: LocalStorage, dbname: str, **kw):
    collections = kw.pop("collections", [])
    existing = kw.pop("existing", "fail")
    target = PostgresTarget("copy", pgdb.url(dbname), None, existing, parallel=kw.pop("parallel", 2))
    return run_restore(
        storage, kw.pop("key", KEY), target, collections, lambda *a: None, kw.pop("stop", lambda: False), **kw
    )


def test_whole_database_comes_back_identical(snapshot):
    src, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        result = _restore(storage, dst)
        assert result.schema["mode"] == "parallel" and not result.schema.get("skipped")
        assert pgdb.schema_dump(dst) == pgdb.schema_dump(src)  # 0 differing lines
        assert pgdb.checksums(dst) == pgdb.checksums(src)
        assert pgdb.sequences(dst) == pgdb.sequences(src)
        with pgdb.connect(dst) as c:
            # serial, identity and a sequence shared through a default all continue
            assert (
                c.execute("INSERT INTO shop.customers (email) VALUES ('new@x.org') RETURNING id").fetchone()[
                    0
                ]
                == 2001
            )
            assert (
                c.execute(
                    "INSERT INTO shop.orders (customer_id, placed, amount) VALUES (1, now(), 1) RETURNING id"
                ).fetchone()[0]
                == 10001
            )
            assert (
                c.execute("""INSERT INTO "Odd Schema"."a/../../b" (k) VALUES ('z') RETURNING v""").fetchone()[
                    0
                ]
                == 1050
            )
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                c.execute("""INSERT INTO shop."Order Lines" VALUES (1, 999999, 1)""")
            with pytest.raises(psycopg.errors.UniqueViolation):
                c.execute("INSERT INTO shop.customers (email) VALUES ('U1@X.ORG')")  # citext + lower() index
            with pytest.raises(psycopg.errors.CheckViolation):
                c.execute("INSERT INTO shop.customers (email, born) VALUES ('y@x.org', 1800)")  # the domain
            with pytest.raises(psycopg.errors.ExclusionViolation):
                c.execute(
                    "INSERT INTO shop.orders (customer_id, placed, amount, during, note) "
                    "SELECT 1, now(), 1, during, 'booking' FROM shop.orders WHERE note = 'booking' LIMIT 1"
                )
            before = c.execute("SELECT updated_at FROM shop.customers WHERE id = 5").fetchone()[0]
            c.execute("UPDATE shop.customers SET name = 'Renamed' WHERE id = 5")  # the trigger fires
            after, slug = c.execute("SELECT updated_at, slug FROM shop.customers WHERE id = 5").fetchone()
            assert after > before and slug == "renamed"  # and the generated column follows
            assert c.execute("SELECT count(*) FROM shop.totals").fetchone()[0] == 2000
            assert c.execute("SELECT shop.order_total(1)").fetchone()[0] > 0
            others = c.execute("SELECT count(*) FROM shop.measurements_other").fetchone()[0]
            c.execute("INSERT INTO shop.measurements VALUES (1, '2031-05-05', 3)")  # the default partition
            assert c.execute("SELECT count(*) FROM shop.measurements_other").fetchone()[0] == others + 1


def test_tables_bigger_than_the_spool_stream_straight_in(snapshot, monkeypatch):
    """Tables load in parallel from spool files up to SPOOL_BYTES; bigger ones the archive
    reader streams into a COPY of its own. Both paths give the same database."""
    from transfer.sources.postgres import spool

    src, storage = snapshot
    monkeypatch.setattr(spool, "SPOOL_BYTES", 64 * 1024)
    with pgdb.databases("dst") as (dst,):
        result = _restore(storage, dst)
        assert all(c["ok"] for c in result.collections.values())
        assert pgdb.checksums(dst) == pgdb.checksums(src)
        assert pgdb.schema_dump(dst) == pgdb.schema_dump(src)


def test_restore_record_says_what_it_skipped_when_some_tables_are_chosen(snapshot):
    _, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        result = _restore(storage, dst, collections=["shop.orders"])
        skipped = {s["object"]: s["reason"] for s in result.schema["skipped"]}
        fk = "fk constraint shop.orders orders_customer_id_fkey"
        assert skipped == {fk: "refers to table shop.customers, not restored"}
        restored = pgdb.user_objects(dst)
        assert (
            "shop.orders" in restored and "shop.orders_pkey" in restored and "shop.orders_during" in restored
        )
        assert "shop.customers" not in restored and "shop.Order Lines" not in restored
        assert "shop.big_orders" not in restored  # views are not tables: not chosen
        with pgdb.connect(dst) as c:
            c.execute("INSERT INTO shop.orders (customer_id, placed, amount) VALUES (424242, now(), 1)")
            assert c.execute("SELECT count(*) FROM pg_policies WHERE tablename = 'orders'").fetchone()[0] == 1


def test_chosen_tables_bring_the_types_functions_and_sequences_they_need(snapshot):
    src, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        result = _restore(storage, dst, collections=["shop.customers"])
        assert not result.schema.get("skipped")  # its only foreign key points at itself
        restored = set(pgdb.user_objects(dst))
        for needed in ("extension citext", "shop.mood", "shop.address", "shop.year", "shop.slugify(text)",
                       "shop.touch()", "shop.customers_id_seq", "shop.customers_email_lower"):  # fmt: skip
            assert needed in restored, needed
        assert "shop.orders" not in restored and "shop.invoice_no" not in restored
        assert pgdb.checksums(dst)["shop.customers"] == pgdb.checksums(src)["shop.customers"]
        with pgdb.connect(dst) as c:
            assert (
                c.execute("INSERT INTO shop.customers (email) VALUES ('n@x.org') RETURNING id").fetchone()[0]
                == 2001
            )


def test_a_renamed_table_keeps_its_indexes_constraints_and_sequence_beside_the_original(snapshot):
    src, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        _restore(storage, dst)
        result = _restore(
            storage, dst, collections=["shop.customers"], mapping={"shop.customers": "customers_2025"}
        )
        assert result.collections["shop.customers"]["ok"]
        with pgdb.connect(dst) as c:
            indexes = {
                r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'customers_2025'")
            }
            assert indexes == {"customers_2025_pkey", "customers_2025_email_lower", "customers_2025_active"}
            default = c.execute(
                "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                "WHERE adrelid = 'shop.customers_2025'::regclass "
                "AND adnum = 1"
            ).fetchone()[0]
            assert default == "nextval('shop.customers_2025_id_seq'::regclass)"
            assert c.execute("SELECT last_value FROM shop.customers_2025_id_seq").fetchone()[0] == 2000
            fks = {r[0] for r in c.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'shop.customers_2025'::regclass "
                "AND contype = 'f'")}  # fmt: skip
            assert fks == {
                "FOREIGN KEY (referrer) REFERENCES shop.customers_2025(id)"
            }  # the self-reference follows
            triggers = c.execute("SELECT count(*) FROM pg_trigger "
                                 "WHERE tgrelid = 'shop.customers_2025'::regclass "
                                 "AND NOT tgisinternal").fetchone()[0]  # fmt: skip
            assert triggers == 1
            c.execute("INSERT INTO shop.customers_2025 (email) VALUES ('n@x.org')")
            assert (
                c.execute("SELECT last_value FROM shop.customers_id_seq").fetchone()[0] == 2000
            )  # untouched
        assert pgdb.checksums(dst)["shop.customers"] == pgdb.checksums(src)["shop.customers"]


def test_a_rename_into_another_schema_and_what_cannot_follow_it_is_listed(snapshot):
    _, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        result = _restore(storage, dst, mapping={"shop.orders": "archive.orders"})
        skipped = {s["object"] for s in result.schema["skipped"]}
        assert {
            "view shop.big_orders",
            "view shop.big_order_customers",
            "materialized view shop.totals",
        } <= skipped
        with pgdb.connect(dst) as c:
            assert c.execute("SELECT count(*) FROM archive.orders").fetchone()[0] == 10000
            refs = c.execute(
                """SELECT pg_get_constraintdef(oid) FROM pg_constraint
                   WHERE conrelid = 'shop."Order Lines"'::regclass
                   AND contype = 'f'"""
            ).fetchone()[0]
            assert "REFERENCES archive.orders(id)" in refs


def test_existing_tables_fail_truncate_or_append_in_one_transaction(snapshot):
    src, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        _restore(storage, dst)
        before = pgdb.checksums(dst)
        with pytest.raises(TargetError, match="is not empty"):
            _restore(storage, dst, collections=["shop.customers"])
        assert pgdb.checksums(dst) == before
        with pytest.raises(
            TargetError, match=r"Table \"orders\" references \"customers\".*restore that table too"
        ):
            _restore(storage, dst, collections=["shop.customers"], existing="truncate")
        assert pgdb.checksums(dst) == before
        family = ["shop.customers", "shop.orders", "shop.Order Lines"]
        result = _restore(storage, dst, collections=family, existing="truncate")
        assert result.schema["mode"] == "one transaction" and all(
            c["ok"] for c in result.collections.values()
        )
        assert pgdb.checksums(dst) == before
        # Appending rows whose keys exist fails as a whole: the table keeps its rows.
        with pytest.raises(TargetError, match="duplicate key"):
            _restore(storage, dst, collections=["shop.customers"], existing="append")
        assert pgdb.checksums(dst) == before
        with pgdb.connect(dst) as c:
            c.execute("""DELETE FROM "Odd Schema"."a/../../b" WHERE k > 'k3'""")
        appended = _restore(storage, dst, collections=["Odd Schema.a/../../b"], existing="truncate")
        assert appended.collections["Odd Schema.a/../../b"]["found"] == 50
        assert pgdb.sequences(dst) == pgdb.sequences(src)


@pytest.mark.parametrize("existing", ["append", "fail"])
def test_a_worker_that_died_after_its_commit_is_not_restored_twice(snapshot, existing):
    """Killed between the target's COMMIT and the completion event: the next attempt asks
    the target whether the recorded transaction committed, and only records the restore."""
    src, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        one = ["shop.customers"]
        _restore(storage, dst, collections=one)
        with pgdb.connect(dst) as c:  # an existing, empty table: the one-transaction path
            c.execute("TRUNCATE shop.customers")
        plans: list[dict] = []
        _restore(storage, dst, collections=one, existing=existing, on_plan=plans.append)
        assert plans[-1]["mode"] == "single" and "committing" in plans[-1]
        again = _restore(storage, dst, collections=one, existing=existing, resume=plans[-1])
        assert again.collections["shop.customers"]["ok"] and again.items == 2000
        assert pgdb.checksums(dst)["shop.customers"] == pgdb.checksums(src)["shop.customers"]  # not twice


def test_a_failed_restore_leaves_the_target_as_it_was(snapshot):
    _, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        with pgdb.connect(dst) as c:  # the target already has the domain, stricter: rows fail it
            c.execute("CREATE SCHEMA shop; CREATE DOMAIN shop.year AS integer CHECK (VALUE > 3000)")
        before = pgdb.user_objects(dst)
        with pytest.raises(TargetError, match="shop.year"):
            _restore(storage, dst)
        assert pgdb.user_objects(dst) == before


def test_a_stop_during_post_data_removes_everything_it_created(snapshot):
    _, storage = snapshot
    with pgdb.databases("dst") as (dst,):
        watcher = pgdb.connect(dst)

        def stop() -> bool:  # once the first index exists: post-data has begun
            return bool(
                watcher.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'shop'").fetchone()[0]
            )

        with pytest.raises(Stopped):
            _restore(storage, dst, stop=stop)
        watcher.close()
        assert pgdb.user_objects(dst) == []


def test_a_flipped_byte_in_the_schema_is_caught_before_anything_is_written(snapshot, tmp_path):
    _, storage = snapshot
    damaged = LocalStorage("damaged", tmp_path)
    raw = (storage.root / KEY).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.getmember("schema/schema.dump")
    data = bytearray(raw)
    data[member.offset_data + member.size // 2] ^= 0x01
    (tmp_path / "pg").mkdir()
    (tmp_path / KEY).write_bytes(bytes(data))
    (tmp_path / manifest_key(KEY)).write_bytes((storage.root / manifest_key(KEY)).read_bytes())
    with pytest.raises(ArchiveError, match="checksum mismatch in schema member 'schema.dump'"):
        verify_archive(damaged, KEY)
    with pgdb.databases("dst") as (dst,):
        with pytest.raises(ArchiveError, match="schema member"):
            _restore(damaged, dst)
        assert pgdb.user_objects(dst) == []


def test_the_archive_restores_by_hand_with_pg_restore_and_psql(snapshot, tmp_path):
    src, storage = snapshot
    with tarfile.open(storage.root / KEY) as tar:
        tar.extractall(tmp_path, filter="data")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["schema"]) == {"schema.dump", "state.json", "load.psql", "refresh.psql"}
    with pgdb.databases("dst") as (dst,):
        target = pgdb.conninfo(dst)
        for step in (
            ["pg_restore", "--no-owner", "--section=pre-data", "-d", target, "schema/schema.dump"],
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "schema/load.psql"],
            ["pg_restore", "--no-owner", "--section=post-data", "-d", target, "schema/schema.dump"],
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "schema/refresh.psql"],
        ):
            subprocess.run(step, cwd=tmp_path, check=True, capture_output=True)
        assert pgdb.schema_dump(dst) == pgdb.schema_dump(src)
        assert pgdb.checksums(dst) == pgdb.checksums(src)
        assert pgdb.sequences(dst) == pgdb.sequences(src)


def test_owners_and_grants_follow_only_when_asked_and_missing_roles_are_listed(pg_reason, tmp_path):
    if pg_reason:
        pytest.skip(pg_reason)
    storage = LocalStorage("local", tmp_path)
    with pgdb.databases("src", "dst", "dst") as (src, plain, kept), pgdb.admin() as admin:
        stays, goes = f"sl_stays_{src[-8:]}", f"sl_goes_{src[-8:]}"
        admin.execute(f'CREATE ROLE "{stays}"; CREATE ROLE "{goes}"')
        try:
            with pgdb.connect(src) as c:
                c.execute(f"""CREATE SCHEMA app;
                              CREATE TABLE app.t (v int); ALTER TABLE app.t OWNER TO "{stays}";
                              CREATE TABLE app.u (v int); GRANT SELECT ON app.u TO "{goes}";
                              CREATE TABLE app.w (v int); ALTER TABLE app.w OWNER TO "{goes}";""")
            run_backup(PostgresSource("s", pgdb.url(src), None, ["app"]), storage, "o.tar", [], [], {},
                       lambda *a: None, lambda: False)  # fmt: skip
            with pgdb.connect(src) as c:
                c.execute(f'DROP OWNED BY "{goes}"; ')
            admin.execute(f'DROP ROLE "{goes}"')
            _restore(storage, plain, key="o.tar")
            result = _restore(storage, kept, key="o.tar", keep_owners=True)
            owners = "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'app'::regnamespace"  # noqa: E501
            with pgdb.connect(plain) as c:
                assert {r[1] for r in c.execute(owners)} == {"postgres"}
            with pgdb.connect(kept) as c:
                assert dict(c.execute(owners).fetchall()) == {"t": stays, "u": "postgres", "w": "postgres"}
            assert result.schema["missing_roles"] == [goes]
            assert {s["object"] for s in result.schema["skipped"]} == {
                "grants on table app.u",
                "owner of table app.w",
            }
        finally:
            for db in (src, plain, kept):
                with pgdb.connect(db) as c:
                    c.execute(f'DROP OWNED BY "{stays}"')
            admin.execute(f'DROP ROLE IF EXISTS "{stays}"')


def test_pg_dump_older_than_the_server_or_missing_fails_naming_both(pg_reason, tmp_path, monkeypatch):
    if pg_reason:
        pytest.skip(pg_reason)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.9'\n")
    (fake / "pg_dump").chmod(0o755)
    storage = LocalStorage("local", tmp_path / "st")
    source = PostgresSource("old", pgdb.url("test"), None, ["public"])
    from transfer.sources.postgres import tools as pg_tools

    pg_tools._version_of.cache_clear()
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(SourceError, match=r"pg_dump 12\.9 cannot back up PostgreSQL 1\d\.\d+"):
        run_backup(source, storage, "x.tar", [], [], {}, lambda *a: None, lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(SourceError, match="pg_dump not found on PATH: install"):
        run_backup(source, storage, "x.tar", [], [], {}, lambda *a: None, lambda: False)
    pg_tools._version_of.cache_clear()


def test_a_target_older_than_the_source_is_refused_naming_both(snapshot):
    _, storage = snapshot
    with tarfile.open(storage.root / KEY) as tar:
        schema = {name: tar.extractfile(f"schema/{name}").read() for name in ("schema.dump", "state.json")}
    state = json.loads(schema["state.json"])
    state["server_version_num"] = 990001
    schema["state.json"] = json.dumps(state).encode()
    with pgdb.databases("dst") as (dst,):
        target = PostgresTarget("old", pgdb.url(dst), None, "fail")
        with pytest.raises(
            TargetError, match=r"runs PostgreSQL 1\d\.\d+, older than 99\.1 the snapshot came from"
        ):
            with target.open("postgresql") as session:
                session.begin(schema)
        assert pgdb.user_objects(dst) == []


def test_format_1_archives_still_restore(pg_reason, tmp_path):
    """Snapshots taken before pg_dump carried the schema restore as they always did."""
    if pg_reason:
        pytest.skip(pg_reason)
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "pg-format1"
    storage = LocalStorage("old", fixtures)
    with pgdb.databases("dst") as (dst,):
        target = PostgresTarget("t", pgdb.url(dst), None, "fail")
        result = run_restore(storage, "shop-format1.tar", target, [], lambda *a: None, lambda: False)
        assert result.items == 20 and result.collections["shop.items"]["ok"]
        with pgdb.connect(dst) as c:
            assert c.execute("INSERT INTO shop.items (name) VALUES ('new') RETURNING id").fetchone()[0] == 21
            with pytest.raises(psycopg.errors.UniqueViolation):
                c.execute("INSERT INTO shop.items (name) VALUES ('item 1')")
