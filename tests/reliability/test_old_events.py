"""Old events keep loading: a checked-in fixture of every event type, in the format of the
day it was written, replays into aggregates and views. A change of an event's shape must
come with an upcaster, or this test fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from api.runtime import Runtime
from projections.eventlog import EVENT_TYPES

FIXTURES = sorted(
    (Path(__file__).resolve().parents[1] / "fixtures").glob("events*.jsonl"),
    key=lambda p: int(p.stem.removeprefix("events-v")) if "-v" in p.stem else 0,  # events.jsonl: the first
)


def _stored(path: Path) -> list[StoredEvent]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.append(
            StoredEvent(
                originator_id=UUID(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=base64.b64decode(row["state"]),
            )
        )
    return out


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_fixture_replays_into_aggregates_and_views(fixture, make_config):
    stored = _stored(fixture)
    runtime = Runtime.build(make_config())
    try:
        runtime.app.recorder.insert_events(stored)
        names = set()
        for n in runtime.app.recorder.select_notifications(start=1, limit=10_000):
            event = runtime.app.mapper.to_domain_event(n)
            names.add(type(event).__name__)
        for aggregate_id in {s.originator_id for s in stored}:
            runtime.app.repository.get(aggregate_id)  # every stream folds into an aggregate
        runtime.runner.catch_up()
        policies = runtime.views.query("SELECT name, status FROM policies ORDER BY created_at")
        assert policies[0]["status"] == "deleted"
        assert runtime.views.query("SELECT count(*) AS n FROM backup_records")[0]["n"] >= 4
        entries = runtime.eventlog.global_page(0, 500)
        assert all(e["message"] for e in entries)
    finally:
        runtime.views.close()
        runtime.app.close()
    if fixture == FIXTURES[-1]:
        missing = sorted(set(EVENT_TYPES) - names)
        assert not missing, f"the newest fixture lacks {missing}: extend make_event_fixture.py"
