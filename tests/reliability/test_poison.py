"""No poison pills: one bad input fails one run (or is carried), never the worker, the
policy or the event stream."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.api import completed_snapshot, create_policy, wait_for
from tests.support.tally import report

API = "/api/v1"


def test_a_file_name_that_is_not_utf8_is_carried_and_the_installation_goes_on(
    make_config, client_for, tmp_path
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "good.ndjson").write_bytes(b'{"_id": 1}\n')
    os.close(os.open(os.fsencode(source) + b"/bad\xff.ndjson", os.O_CREAT | os.O_WRONLY, 0o644))
    with open(os.fsencode(source) + b"/bad\xff.ndjson", "wb") as f:
        f.write(b'{"_id": 2}\n{"_id": 3}\n')
    client = client_for(make_config(extra=f'[sources.odd]\npath = "{source}"\n'))
    pid = create_policy(client, name="odd", source="odd")
    snap = completed_snapshot(client, pid)
    assert snap["status"] == "completed", snap["error"]
    assert {c: v["items"] for c, v in snap["collections"].items()} == {"good": 1, "bad%FF": 2}
    assert client.get(f"{API}/backups/{snap['id']}/log").status_code == 200
    # The policy stays operable and every other policy still runs.
    assert client.post(f"{API}/policies/{pid}/stop").status_code == 200
    assert completed_snapshot(client, create_policy(client, name="other"))["status"] == "completed"
    assert client.post(f"{API}/policies/{pid}/rebuild").status_code == 202
    # The rebuild's snapshot runs at once; a delete meanwhile may meet it mid-write (409, by
    # design), so the delete waits for it, as an operator's would.
    wait_for(
        client, f"{API}/backups?policy_id={pid}",
        lambda page: all(b["status"] not in ("requested", "running") for b in page["items"]),
    )  # fmt: skip
    assert client.delete(f"{API}/policies/{pid}").status_code == 200
    report("poison: a non-UTF-8 file name carried as 'bad%FF' (2 items); the policy stayed operable")


def test_an_event_that_cannot_be_stored_fails_its_run_and_leaves_no_gap(make_config, client_for, monkeypatch):
    """Whatever slips through (here: a progress event forced to carry a lone surrogate),
    the run ends failed with a storable reason and its stream replays."""
    from transfer.runs import progress

    original = progress.ProgressThrottle.__call__

    def poisoned(self, items, bytes_, percent, collection):
        return original(self, items, bytes_, percent, "\udcff" if collection else collection)

    monkeypatch.setattr(progress.ProgressThrottle, "__call__", poisoned)
    client = client_for(make_config())
    pid = create_policy(client, name="p")
    sid = client.post(f"{API}/policies/{pid}/snapshots").json()["id"]
    snap = wait_for(client, f"{API}/backups/{sid}", lambda b: b["status"] in ("completed", "failed"))
    assert snap["status"] == "failed" and "\\udcff" in snap["error"], snap
    app = client.app.state.runtime.app
    versions = [n.originator_version for n in app.recorder.select_notifications(start=1, limit=10_000)
                if str(n.originator_id) == sid]  # fmt: skip
    assert versions == list(range(1, len(versions) + 1)), versions  # no gap
    app.get_snapshot(sid)  # and it loads
    monkeypatch.undo()
    assert completed_snapshot(client, pid)["status"] == "completed"  # the policy goes on


@pytest.mark.parametrize(
    "path,body,field",
    [
        (
            "/policies",
            {"name": "n", "source": "demo", "storage": "local", "collections": ["\udcff"]},
            "collections",
        ),
        (
            "/policies",
            {"name": "n", "source": "demo", "storage": "local", "schedule": "0 3 * * \udcff"},
            "schedule",
        ),
    ],
)
def test_a_lone_surrogate_in_a_body_is_a_422_naming_the_field(client, path, body, field):
    import json

    raw = json.dumps(body).encode()  # "\\udcff" in the JSON text, as a client sends it
    r = client.post(API + path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and "lone surrogate" in r.json()["error"]


def test_a_lone_surrogate_in_a_restore_mapping_is_a_422(client):
    import json

    snap = completed_snapshot(client, create_policy(client))
    raw = json.dumps(
        {"snapshot_id": snap["id"], "target": "scratch", "mapping": {"orders": "o\udcff"}}
    ).encode()
    r = client.post(f"{API}/restores", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "mapping.orders", r.text


@pytest.mark.parametrize("raw", ["²", "٣", "1²"])
def test_unicode_digits_in_query_parameters_are_a_422(client, raw):
    for path in (f"/backups?limit={raw}", f"/events?after={raw}"):
        r = client.get(API + path)
        assert r.status_code == 422, (path, r.text)


def test_syncing_again_a_location_that_holds_imported_archives_answers(backend, make_config, client_for):
    from tests.support.stores import wipe_event_store as _wipe_event_store

    config = make_config()
    client = client_for(config)
    pid = create_policy(client)
    for _ in range(2):
        completed_snapshot(client, pid)
    client.__exit__(None, None, None)
    _wipe_event_store(config, backend)
    fresh = client_for(config)
    assert len(fresh.post(f"{API}/storages/local/sync").json()["imported"]) == 2
    for _ in range(2):  # the imported archives are known now: nothing to do, and no 500
        r = fresh.post(f"{API}/storages/local/sync")
        assert r.status_code == 200, r.text
        assert r.json()["imported"] == [] and r.json()["known"] == 2


def test_a_woken_attempt_never_touches_the_files_of_the_attempt_that_replaced_it(tmp_path):
    """Each NDJSON restore session writes under partial names of its own: the old one's
    cleanup (it was fenced) leaves the new one's work alone."""
    from transfer.sources.ndjson import NdjsonTarget

    target = NdjsonTarget("t", tmp_path / "t")
    with target.open("ndjson") as new:
        new.prepare("orders", None)
        with new.open_out("orders") as out:
            out.write(b'{"_id": "new"}\n')
        with target.open("ndjson") as old:  # the frozen attempt wakes, writes, is fenced
            old.prepare("orders", None)
            with old.open_out("orders") as out:
                out.write(b'{"_id": "old"}\n')
        assert new.count_items("orders") == 1
        new.commit()
    assert (tmp_path / "t" / "orders.ndjson").read_bytes() == b'{"_id": "new"}\n'
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["orders.ndjson"]


def test_an_attempt_claimed_again_cannot_commit(make_config, client_for):
    """Right before publishing, a run re-reads its stream: a run claimed again meanwhile
    is fenced there, so a woken worker neither replaces nor appends twice."""
    from datetime import UTC, datetime, timedelta

    from service.claimed_run import ClaimedRun, Fenced

    client = client_for(make_config("[worker]\nenabled = false\n"))
    app = client.app.state.runtime.app
    sid = app.request_snapshot(create_policy(client), "t").id
    now = datetime.now(UTC)
    first = app.claim_run("snapshot", sid, "w1", 2, now)
    run = ClaimedRun(app, first, lambda: app.get_snapshot(sid), 0.25)
    run.still_ours()  # nobody else: fine
    assert app.claim_run("snapshot", sid, "w2", 2, now + timedelta(seconds=10)) is not None  # lease lapsed
    with pytest.raises(Fenced):
        run.still_ours()


@pytest.fixture
def fresh_schema(pg_reason):
    import uuid

    import psycopg

    from api.config import parse_database_url
    from tests.support.api import PG_URL

    if pg_reason:
        pytest.skip(pg_reason)
    schema = f"sl_race_{uuid.uuid4().hex[:8]}"
    yield schema
    with psycopg.connect(
        parse_database_url(PG_URL, __import__("pathlib").Path("."), None).conninfo(), autocommit=True
    ) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_processes_starting_at_once_on_a_fresh_schema_all_come_up(fresh_schema, tmp_path):
    """`serve` and workers started together against a new database: every one converges
    (the issue saw 11 of 20 exit on 'already exists')."""
    import subprocess

    from tests.support.api import PG_URL
    from tests.support.servers import snapledger_exe

    config = tmp_path / "snapledger.toml"
    config.write_text(f'data_dir = "data"\n[database]\nurl = "{PG_URL}?schema={fresh_schema}"\n')
    procs = [
        subprocess.Popen([snapledger_exe(), "--config", str(config), "projections", "rebuild", "--jobs", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(8)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    failed = [(p.returncode, out[-400:]) for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    report(f"start-up race: {len(procs) - len(failed)} of {len(procs)} processes on one fresh schema came up")
    assert not failed, failed


def test_a_full_disk_leaves_no_partial_file_behind(tmp_path):
    """ENOSPC on the last flush made close() raise in abort(), so the partial file (12.6 MB
    in the issue) stayed and the location filled up for good."""
    import errno

    from transfer.storage import LocalStorage

    class Full:
        def __init__(self, file):
            self.inner = file

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self):
            return self.inner.fileno()

        def close(self):
            self.inner.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    storage = LocalStorage("local", tmp_path)
    for fail_at in ("write", "commit"):
        writer = storage.open_writer(f"p/{fail_at}.tar")
        writer.file = Full(writer.file)
        with pytest.raises(OSError):
            if fail_at == "write":
                writer.write(b"x" * 1024)
            else:
                writer.commit()
        writer.abort() if fail_at == "write" else None
        assert [p.name for p in (tmp_path / "p").iterdir()] == [], fail_at
    report("disk full: ENOSPC on write and on commit, 0 partial files left behind")


def test_a_full_disk_shows_in_health_and_health_recovers_when_space_returns(tmp_path, monkeypatch):
    """The health probe writes a small object like any archive: while the disk is full the
    location is unhealthy with the reason (and the probe leaves nothing behind); once space
    returns the next check is healthy again."""
    import errno

    from transfer.storage import LocalStorage
    from transfer.storage import local as storage_module
    from transfer.storage.health import HealthBoard

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    board = HealthBoard({"local": LocalStorage("local", tmp_path)})
    monkeypatch.setattr(storage_module.os, "fsync", full)
    sick = board.check("local")
    assert not sick.ok and "No space left" in (sick.error or ""), sick
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    assert board.check("local").ok and board.last("local").ok
    report("disk full: the location reported unhealthy (ENOSPC) and healthy again once space returned")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_process_starting_beside_a_running_runner_does_not_deadlock_with_it(make_config, backend):
    """A runner's batch holds one view table and then writes another; a process starting
    meanwhile ran all the views' DDL in one transaction (CREATE INDEX IF NOT EXISTS locks
    its table even when the index exists), holding `policies` while it waited for
    `backup_records`: PostgreSQL broke the deadlock by failing one of them."""
    import threading

    import psycopg

    from api.runtime import Runtime
    from projections.runner import ProjectionRunner

    config = make_config()
    runtime = Runtime.build(config)  # the views exist, as in a running installation
    try:
        path = f"-c search_path={config.database.schema}"
        batch = psycopg.connect(config.database.conninfo(), options=path)
        batch.execute("UPDATE backup_records SET items = items WHERE false")  # holds backup_records
        errors: list[BaseException] = []

        def start() -> None:
            try:
                ProjectionRunner(runtime.app, runtime.views)  # a second process's start-up
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        starter = threading.Thread(target=start)
        starter.start()
        time.sleep(1.0)  # the starter is now waiting for backup_records
        batch.execute("SET lock_timeout = '20s'")
        batch.execute("UPDATE policies SET name = name WHERE false")  # the batch's next write
        batch.commit()
        starter.join(timeout=60)
        batch.close()
        assert not starter.is_alive() and not errors, errors
    finally:
        runtime.close()
