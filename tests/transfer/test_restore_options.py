"""Per-restore options: collection mapping, what to do with existing data, dry runs."""

from __future__ import annotations

import json

from eventsourcing.persistence import StoredEvent

from domain.restore import Restore
from tests.support.api import completed_snapshot, create_policy, wait_for

API = "/api/v1"


def _restore(client, body):
    r = client.post(f"{API}/restores", json=body)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    return wait_for(client, f"{API}/restores/{rid}", lambda b: b["status"] in ("completed", "failed"))


def test_mapping_existing_and_dry_run(client):
    snap = completed_snapshot(client, create_policy(client))
    scratch = client.app.state.runtime.config.targets["scratch"].path

    dry = _restore(
        client,
        {
            "snapshot_id": snap["id"],
            "target": "scratch",
            "dry_run": True,
            "mapping": {"orders": "orders_2026"},
        },
    )
    assert dry["status"] == "completed" and dry["dry_run"] and "(dry run)" in dry["sub_name"]
    assert dry["consistency"]["orders"] == {
        "expected": 2600,
        "found": 2600,
        "ok": True,
        "target_name": "orders_2026",
        "would_write": 2600,
    }
    assert not scratch.exists() or not list(scratch.iterdir()), "a dry run writes nothing"

    rec = _restore(
        client,
        {
            "snapshot_id": snap["id"],
            "target": "scratch",
            "collections": ["orders"],
            "mapping": {"orders": "orders_2026"},
        },
    )
    assert rec["status"] == "completed", rec["error"]
    assert rec["options"]["mapping"] == {"orders": "orders_2026"}
    assert sorted(p.name for p in scratch.iterdir()) == ["orders_2026.ndjson"]

    refused = _restore(
        client,
        {
            "snapshot_id": snap["id"],
            "target": "scratch",
            "collections": ["orders"],
            "mapping": {"orders": "orders_2026"},
            "existing": "fail",
        },
    )
    assert refused["status"] == "failed" and "not empty" in refused["error"]
    appended = _restore(
        client,
        {
            "snapshot_id": snap["id"],
            "target": "scratch",
            "collections": ["orders"],
            "mapping": {"orders": "orders_2026"},
            "existing": "append",
        },
    )
    assert appended["status"] == "completed", appended["error"]
    assert len((scratch / "orders_2026.ndjson").read_bytes().splitlines()) == 5200


def test_restore_option_errors(client):
    snap = completed_snapshot(client, create_policy(client))
    for extra, field in [
        ({"existing": "truncate"}, "existing"),  # not an NDJSON choice
        ({"mapping": {"orders": "../x"}}, "mapping"),
        ({"mapping": {"orders": "customers"}}, "mapping"),
        ({"mapping": ["orders"]}, "mapping"),
        ({"dry_run": "yes"}, "dry_run"),
    ]:
        r = client.post(f"{API}/restores", json={"snapshot_id": snap["id"], "target": "scratch", **extra})
        assert (r.status_code, r.json()["field"]) == (422, field), (extra, r.text)
    ghosts = {"snapshot_id": snap["id"], "target": "scratch", "mapping": {"ghosts": "x"}}
    r = client.post(f"{API}/restores", json=ghosts)  # a valid mapping, of nothing the snapshot holds
    assert (r.status_code, r.json()["field"]) == (404, "mapping"), r.text


def test_v1_restore_requested_events_still_load(client):
    """Events written before the options existed upcast with the old behaviour."""
    app = client.app.state.runtime.app
    snap = completed_snapshot(client, create_policy(client))
    restore = Restore(
        snapshot_id=app.get_snapshot(snap["id"]).id,
        policy_id=app.get_snapshot(snap["id"]).policy_id,
        sub_name="old",
        storage="local",
        archive_key="k",
        target="scratch",
        collections=[],
        mapping={"a": "b"},
        existing="fail",
        dry_run=True,
        actor="ops",
    )
    stored = app.mapper.to_stored_event(restore.collect_events()[0])
    state = json.loads(stored.state)
    assert state.pop("class_version") == 6
    for key in (
        "mapping",
        "existing",
        "dry_run",
        "keep_owners",
        "trust_unverified",
        "validate",
        "point_in_time",
    ):
        del state[key]
    v1 = StoredEvent(
        stored.originator_id, stored.originator_version, stored.topic, json.dumps(state).encode()
    )
    event = app.mapper.to_domain_event(v1)
    assert (event.mapping, event.existing, event.dry_run, event.keep_owners) == ({}, None, False, None)
    assert (event.trust_unverified, event.validate, event.point_in_time) == (False, False, None)


def test_view_with_changed_shape_is_rebuilt_at_startup(make_config, client_for):
    from projections.views import restores

    config = make_config()
    client = client_for(config)
    snap = completed_snapshot(client, create_policy(client))
    rec = _restore(client, {"snapshot_id": snap["id"], "target": "scratch"})
    first = client.app.state.runtime
    first.worker.stop()
    first.runner.stop()
    restores.version += 1
    try:
        again = client_for(config)
        row = wait_for(again, f"{API}/restores/{rec['id']}", lambda b: b.get("status") == "completed")
        assert row["consistency"]["orders"]["ok"]
    finally:
        restores.version -= 1
