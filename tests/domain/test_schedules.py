"""Schedules: one snapshot per slot however many schedulers run; catch-up, not bursts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.runtime import Runtime
from domain.schedule import latest_slot, next_slot, scheduled_snapshot_id
from service.scheduler import Scheduler


def _policy(runtime: Runtime, schedule: str = "*/5 * * * *", tz: str = "UTC", name: str = "sched") -> str:
    data = {"name": name, "source": "demo", "storage": "local", "schedule": schedule, "timezone": tz}
    return str(runtime.app.create_policy(data, "ops").id)


def _snapshots(runtime: Runtime, policy_id: str) -> list[dict]:
    runtime.runner.catch_up()
    return runtime.views.query(
        "SELECT id, trigger, created_at FROM backup_records WHERE policy_id = %(p)s ORDER BY created_at",
        {"p": policy_id},
    )


def test_two_schedulers_make_one_snapshot_per_slot(make_config):
    config = make_config()
    one, two = Runtime.build(config), Runtime.build(config)  # separate connections, one store
    try:
        pid = _policy(one)
        first = next_slot("*/5 * * * *", "UTC", datetime.now(UTC))
        schedulers = [Scheduler(rt.app, rt.due_policies) for rt in (one, two)]
        slots = [first + timedelta(minutes=5 * i) for i in range(6)]
        for slot in slots:
            for rt in (one, two):
                rt.runner.catch_up()
            now = slot + timedelta(seconds=1)
            barrier = threading.Barrier(4)
            results: list = []

            def tick(
                s: Scheduler, at: datetime = now, gate: threading.Barrier = barrier, out: list = results
            ) -> None:
                gate.wait()
                out.extend(s.tick(at))

            threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers * 2]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(results) == 1, f"slot {slot}: {len(results)} snapshots"
            assert results[0].id == scheduled_snapshot_id(one.app.get_policy(pid).id, slot)
        rows = _snapshots(one, pid)
        assert len(rows) == 6 and {r["trigger"] for r in rows} == {"schedule"}
        policy = one.views.query("SELECT next_run_at, last_slot FROM policies WHERE id = %(p)s", {"p": pid})[
            0
        ]
        assert datetime.fromisoformat(policy["last_slot"]) == slots[-1]
        assert datetime.fromisoformat(policy["next_run_at"]) == slots[-1] + timedelta(minutes=5)
    finally:
        for rt in (one, two):
            rt.views.close()
            rt.app.close()


def test_missed_slots_make_one_catch_up_run_and_stopped_policies_wait(make_config):
    runtime = Runtime.build(make_config())
    try:
        pid = _policy(runtime, "0 * * * *")
        scheduler = Scheduler(runtime.app, runtime.due_policies)
        runtime.runner.catch_up()
        later = datetime.now(UTC) + timedelta(hours=7, minutes=30)  # seven slots went by
        assert len(scheduler.tick(later)) == 1
        runtime.runner.catch_up()
        assert scheduler.tick(later + timedelta(minutes=1)) == []  # that slot is done
        assert len(_snapshots(runtime, pid)) == 1

        other = _policy(runtime, "0 * * * *", name="paused")
        runtime.app.stop_policy(other, "ops")
        runtime.runner.catch_up()
        assert scheduler.tick(datetime.now(UTC) + timedelta(hours=3)) == []  # stopped: nothing
        runtime.app.request_snapshot(other, "ops")  # re-activates
        runtime.runner.catch_up()
        made = scheduler.tick(datetime.now(UTC) + timedelta(hours=3, minutes=30))
        assert [o.extra["policy_id"] for o in made] == [runtime.app.get_policy(other).id]
        assert made[0].extra["slot"] >= runtime.app.get_policy(other).active_since
    finally:
        runtime.views.close()
        runtime.app.close()


def test_time_zone_is_explicit(make_config):
    runtime = Runtime.build(make_config())
    try:
        pid = _policy(runtime, "0 3 * * *", "Asia/Kolkata")
        runtime.runner.catch_up()
        row = runtime.views.query("SELECT timezone, next_run_at FROM policies WHERE id = %(p)s", {"p": pid})[
            0
        ]
        assert row["timezone"] == "Asia/Kolkata"
        next_run = datetime.fromisoformat(row["next_run_at"])
        assert (next_run.hour, next_run.minute) == (21, 30)  # 03:00 IST is 21:30 UTC the day before
        assert latest_slot("0 3 * * *", "Asia/Kolkata", next_run) == next_run
    finally:
        runtime.views.close()
        runtime.app.close()


def test_schedule_fields_through_the_api(client):
    r = client.post(
        "/api/v1/policies",
        json={
            "name": "tz",
            "source": "demo",
            "storage": "local",
            "schedule": "0 3 * * *",
            "timezone": "Mars/Olympus",
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "timezone"
    r = client.post(
        "/api/v1/policies", json={"name": "tz", "source": "demo", "storage": "local", "schedule": "0 3 * * *"}
    )
    pid = r.json()["id"]
    row = client.get(f"/api/v1/policies/{pid}").json()
    assert row["timezone"] == "UTC" and row["next_run_at"].endswith("T03:00:00.000000+00:00")
    assert row["last_success_at"] is None and row["last_failure_at"] is None
    from tests.support.api import completed_snapshot

    completed_snapshot(client, pid)
    assert client.get(f"/api/v1/policies/{pid}").json()["last_success_at"] is not None
    client.post(f"/api/v1/policies/{pid}/stop")
    assert client.get(f"/api/v1/policies/{pid}").json()["next_run_at"] is None


def _slots(schedule: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], start
    while (at := next_slot(schedule, zone, at)) < end:
        out.append(at)
    return out


@pytest.mark.parametrize(
    "zone,day,schedule,expected",
    [
        # fall back: 01:30 happens twice on the wall, once as a slot
        ("America/New_York", "2026-11-01", "30 1 * * *", "2026-11-01T05:30:00+00:00"),
        ("Europe/Lisbon", "2026-10-25", "30 1 * * *", "2026-10-25T00:30:00+00:00"),
        # spring forward: 02:30 (New York) / 01:30 (Lisbon) never happen, still one slot
        ("America/New_York", "2026-03-08", "30 2 * * *", "2026-03-08T07:30:00+00:00"),
        ("Europe/Lisbon", "2026-03-29", "30 1 * * *", "2026-03-29T01:30:00+00:00"),
    ],
)
def test_one_slot_per_wall_clock_time_on_both_daylight_saving_days(zone, day, schedule, expected):
    noon = datetime.fromisoformat(f"{day}T12:00:00+00:00")
    slots = _slots(schedule, zone, noon - timedelta(days=2), noon + timedelta(days=2))
    assert len(slots) == 4, slots  # one a day, the transition day included
    on_the_day = [s for s in slots if s.astimezone(ZoneInfo(zone)).date().isoformat() == day]
    assert [s.isoformat() for s in on_the_day] == [expected]
    # The scheduler's view agrees at every minute of the day: one slot id, never two.
    seen = {
        latest_slot(schedule, zone, noon - timedelta(hours=12) + timedelta(minutes=m)) for m in range(24 * 60)
    }
    assert len({s for s in seen if s.astimezone(ZoneInfo(zone)).date().isoformat() == day}) == 1
