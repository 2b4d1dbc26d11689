"""A continuous MongoDB policy end to end, in one runtime (worker, capture loop, views): its
snapshot opens a window at its cluster time, the capture tails the oplog from there into the
policy's storage, and a restore to a chosen moment, through the application and the worker,
equals the source then. A rename the replay could not follow ends the window and asks for a
new snapshot, which opens the next one.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pymongo
import pytest
from starlette.testclient import TestClient

from api.config import load_config
from api.http import create_app
from api.records import Records
from api.runtime import Runtime
from domain.capture import CAPTURE_STOPPED, CAPTURING, capture_id
from domain.errors import InvalidTransition, NotFound
from domain.snapshot import COMPLETED
from tests.support.keys import KEY_B
from tests.support.mongo import database_names
from tests.support.servers import wait_until
from tests.transfer.test_mongodb import canonical
from transfer.sources.mongodb import capture as oplog_capture
from transfer.storage import layout


def _runtime(tmp_path: Path, data: str, mongo_url: str, mongo_target_url: str, shop: str) -> Runtime:
    """A runtime of its own (`data`: its event store), on the one shared, signing location."""
    config = tmp_path / f"{data}.toml"
    config.write_text(
        f'data_dir = "{tmp_path / data}"\n'
        f'[sources.live]\nkind = "mongodb"\nurl = "{mongo_url}"\ndatabases = ["{shop}"]\n'
        f'[storages.local]\nurl = "{tmp_path / "store"}"\nsigning_key_env = "SNAPLEDGER_TEST_SIGNING_KEY"\n'
        f'[targets.copy]\nkind = "mongodb"\nurl = "{mongo_target_url}"\nexisting = "drop"\n'
        "[worker]\nlease_seconds = 30\n"
    )
    rt = Runtime.build(load_config(config)).start()
    assert rt.captures is not None
    rt.captures.tick_seconds = 0.1
    return rt


@pytest.fixture
def runtime(tmp_path: Path, mongo_url: str, mongo_target_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SNAPLEDGER_TEST_SIGNING_KEY", KEY_B)
    shop, other = database_names("e")
    with pymongo.MongoClient(mongo_url) as src, pymongo.MongoClient(mongo_target_url) as dst:
        src[shop]["orders"].insert_many([{"_id": i, "n": i} for i in range(1, 101)])
        rt = _runtime(tmp_path, "data", mongo_url, mongo_target_url, shop)
        try:
            yield rt, src, dst, shop, other
        finally:
            rt.close()
            for client in (src, dst):
                client.drop_database(shop)
                client.drop_database(other)


def _capture(rt: Runtime, cid: uuid.UUID) -> Any:
    try:
        return rt.app.get_capture(cid)
    except NotFound:  # the capture loop has not started it yet
        return None


def _done(rt: Runtime, load: Any, what: str) -> Any:
    return wait_until(lambda: (r := load()).status == COMPLETED and r, timeout=60, what=what)


def _iso(value: str) -> str:
    """As the views write times."""
    from projections.views.base import iso

    found = iso(datetime.fromisoformat(value))
    assert found is not None
    return found


def _newest_wall(client: Any) -> datetime:
    return datetime.fromisoformat(
        oplog_capture.wall_time(client.local["oplog.rs"].find_one(sort=[("$natural", -1)]))
    )


def test_a_continuous_mongodb_policy_restores_to_a_moment(runtime):
    rt, src, dst, shop, other = runtime
    pid = rt.app.create_policy(
        {"name": "live", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}}, "ops"
    ).id
    sid = rt.app.request_snapshot(pid, "ops").id
    rt.nudge_worker()
    snap = _done(rt, lambda: rt.app.get_snapshot(sid), "the snapshot")
    window = snap.point_in_time["capture"]
    assert window["kind"] == "mongodb" and window["from_position"] == snap.point_in_time["cluster_time"]
    assert window["databases"] == [shop] and window["from_time"]

    cid = capture_id(pid, sid)
    moments: list[tuple[datetime, tuple[int, str]]] = []
    for step in range(4):
        with src.start_session() as session, session.start_transaction():
            src[shop]["orders"].update_many(
                {"_id": {"$lte": 10 * (step + 1)}}, {"$inc": {"n": 1}}, session=session
            )
            src[shop]["orders"].delete_one({"_id": 100 - step}, session=session)
            src[shop]["orders"].insert_one({"_id": 1000 + step, "n": 0}, session=session)
        moments.append((_newest_wall(src), canonical(src, f"{shop}.orders")))
        time.sleep(0.005)
    last = moments[-1][0]
    capture = wait_until(
        lambda: (
            (c := _capture(rt, cid)) is not None
            and c.restorable_until
            and datetime.fromisoformat(c.restorable_until) >= last
            and c
        ),
        timeout=60,
        what="the capture to archive the changes",
    )
    assert capture.status == CAPTURING and sum(s["transactions"] for s in capture.segments) == 4

    records = Records(rt.views)
    policy = wait_until(
        lambda: (p := records.one("policies", str(pid)))["capture"] and p["capture"]["segments"] >= 1 and p,
        timeout=30,
        what="the views to show the capture",
    )
    assert policy["capture"]["status"] == "capturing" and policy["capture_lag_seconds"] is not None
    backup = records.one("backups", str(sid))
    assert backup["capture"]["capture_id"] == str(cid) and backup["capture"]["segments"] >= 1
    # The window is restorable from the snapshot's own point, and its segments are listed.
    assert policy["restorable_from"] == _iso(window["from_time"]) == policy["capture"]["restorable_from"]
    assert [w["snapshot_id"] for w in policy["restorable"]] == [str(sid)]
    http = TestClient(create_app(rt, start=False))
    segments = rt.app.get_capture(cid).segments
    page = http.get(f"/api/v1/backups/{sid}/segments", params={"limit": 1}).json()
    assert [s["from_position"] for s in page["items"]] == [window["from_position"]]
    assert page["items"][0]["sha256"] == segments[0]["sha256"] and page["items"][0]["changes"] >= 1
    if len(segments) > 1:
        nxt = http.get(f"/api/v1/backups/{sid}/segments", params={"after": page["next_cursor"]}).json()
        assert nxt["items"][0]["from_position"] == page["items"][0]["to_position"]
    else:
        assert page["next_cursor"] is None

    # Through the application and the worker, as POST /restores {policy_id, to_time} does.
    at, expected = moments[2]
    dry = rt.app.restore_to(pid, "copy", {"to_time": at.isoformat(), "dry_run": True}, "ops").id
    rt.nudge_worker()
    planned = _done(rt, lambda: rt.app.get_restore(dry), "the dry run")
    assert planned.schema["point_in_time"]["planned"]["transactions"] == 3
    assert f"{shop}" not in dst.list_database_names()  # a dry run writes nothing
    rid = rt.app.restore_to(pid, "copy", {"to_time": at.isoformat()}, "ops").id
    rt.nudge_worker()
    done = _done(rt, lambda: rt.app.get_restore(rid), "the restore to a moment")
    assert done.snapshot_id == sid and done.schema["point_in_time"]["transactions"] == 3
    assert canonical(dst, f"{shop}.orders") == expected
    with pytest.raises(InvalidTransition, match="is past them"):
        rt.app.restore_to(pid, "copy", {"to_time": "2999-01-01T00:00:00Z"}, "ops")
    with pytest.raises(InvalidTransition, match="has no WAL position"):
        rt.app.restore_to(pid, "copy", {"to_lsn": "0/1"}, "ops")

    # A collection renamed in from a database the capture does not read ends the window,
    # and the capture asks for a snapshot, which opens the next window.
    src[other]["outside"].insert_one({"_id": 1})
    src.admin.command("renameCollection", f"{other}.outside", to=f"{shop}.inside")
    wait_until(
        lambda: rt.app.get_capture(cid).status == CAPTURE_STOPPED, timeout=30, what="the window to end"
    )
    assert "was renamed from" in (rt.app.get_capture(cid).reason or "")
    snapshots = lambda: rt.app.get_policy(pid).snapshot_ids  # noqa: E731
    sid2 = wait_until(lambda: len(snapshots()) == 2 and snapshots()[-1], timeout=30, what="a new snapshot")
    rt.nudge_worker()
    second = _done(rt, lambda: rt.app.get_snapshot(sid2), "the second snapshot")
    assert second.point_in_time["capture"]["kind"] == "mongodb"
    wait_until(lambda: _capture(rt, capture_id(pid, sid2)) is not None, timeout=30, what="the next window")

    # Both windows are restorable while both snapshots are kept; from the first one's start.
    both = wait_until(
        lambda: len((p := records.one("policies", str(pid)))["restorable"]) == 2 and p,
        timeout=30,
        what="the second window to be restorable",
    )
    assert both["restorable_from"] == _iso(window["from_time"])
    assert [w["status"] for w in both["restorable"]] == ["stopped", "capturing"]

    # Deleting the first snapshot takes its window's segments (and their manifests) with it.
    storage = rt.resources.storages["local"]
    keys = [segment["key"] for segment in rt.app.get_capture(cid).segments]
    assert keys and all(storage.exists(k) and storage.exists(layout.segment_manifest_key(k)) for k in keys)
    rt.delete_snapshot(str(sid), "ops")
    assert not any(storage.exists(k) or storage.exists(layout.segment_manifest_key(k)) for k in keys)
    after = wait_until(
        lambda: len((p := records.one("policies", str(pid)))["restorable"]) == 1 and p,
        timeout=30,
        what="the deleted snapshot's window to leave the policy",
    )
    assert after["restorable"][0]["snapshot_id"] == str(sid2)


def test_a_rebuilt_control_plane_restores_to_a_moment_from_the_bucket_alone(
    runtime, tmp_path: Path, mongo_url: str, mongo_target_url: str
):
    """Each segment has a signed manifest naming its capture, snapshot and window; a catalog
    resync into an empty event store imports the snapshot, then its window, contiguous up to
    the first segment whose signature does not match, and restores to a moment it holds."""
    rt, src, dst, shop, _ = runtime
    pid = rt.app.create_policy(
        {"name": "live", "source": "live", "storage": "local", "continuous": {"segment_seconds": "1s"}}, "ops"
    ).id
    sid = rt.app.request_snapshot(pid, "ops").id
    rt.nudge_worker()
    _done(rt, lambda: rt.app.get_snapshot(sid), "the snapshot")
    cid = capture_id(pid, sid)
    moments = []
    for step in range(3):
        src[shop]["orders"].update_one({"_id": step + 1}, {"$set": {"n": -step}})
        moments.append((_newest_wall(src), canonical(src, f"{shop}.orders")))
        wait_until(
            lambda n=step + 1: (
                (c := _capture(rt, cid)) is not None and sum(s["transactions"] for s in c.segments) >= n
            ),
            timeout=60,
            what="the capture to archive the change",
        )
    segments = rt.app.get_capture(cid).segments
    rt.app.stop_policy(pid, "ops")
    rt.close()
    storage = rt.resources.storages["local"]
    for facts in segments:
        assert storage.exists(layout.segment_manifest_key(facts["key"]))
        assert storage.exists(layout.segment_signature_key(facts["key"]))
    # The last segment's manifest is changed in the bucket: its signature no longer matches.
    last = layout.segment_manifest_key(segments[-1]["key"])
    storage.put_bytes(last, storage.get_bytes(last).replace(b'"transactions": 1', b'"transactions": 9'))

    fresh = _runtime(tmp_path, "rebuilt", mongo_url, mongo_target_url, shop)
    try:
        report = fresh.sync_storage("local", "ops")
        assert not report.incomplete, report.incomplete  # segments are no incomplete archives
        windows = [e for e in report.imported if "window_of" in e]
        assert windows == [{**windows[0], "window_of": str(sid), "segments": len(segments) - 1}], (
            report.as_dict()
        )
        assert [i["key"] for i in report.invalid] == [last] and "signature" in report.invalid[0]["reason"]
        imported = fresh.app.get_capture(windows[0]["capture_id"])
        assert imported.status == CAPTURE_STOPPED and imported.slot == ""
        at, expected = moments[len(segments) - 2]
        fpid = fresh.app.get_snapshot(sid).policy_id
        rid = fresh.app.restore_to(fpid, "copy", {"to_time": at.isoformat()}, "ops").id
        fresh.nudge_worker()
        _done(fresh, lambda: fresh.app.get_restore(rid), "the restore to a moment")
        assert canonical(dst, f"{shop}.orders") == expected
        assert fresh.sync_storage("local", "ops").imported == []  # a second resync imports nothing
    finally:
        fresh.close()
