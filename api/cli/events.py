"""`snapledger events`: the Event Log, globally or of one policy, followed live if asked."""

from __future__ import annotations

import argparse
import json
from collections import deque
from collections.abc import Callable
from typing import Any
from uuid import UUID

from api.cli import display
from api.cli.common import FOLLOW_SECONDS, MAX_PAGE, Row, _count, _reading, _verb, resolve_policy
from api.cli.tables import _text, _when
from api.records import Records
from api.runtime import Runtime

# ------------------------------------------------------------------ events
EventFetch = Callable[[int, int], list[Row]]


def _event_source(runtime: Runtime, policy: str | None) -> EventFetch:
    """Global log, or a policy's whole cycle: the policy, its snapshots and its restores
    (re-read on each call, so a follower sees snapshots taken after it started)."""
    if policy is None:
        return lambda after, limit: runtime.eventlog.global_page(after, limit)
    policy_id = resolve_policy(runtime, policy)

    def fetch(after: int, limit: int) -> list[Row]:
        runtime.runner.catch_up()  # restores are found through the Restore Records view
        p = runtime.app.get_policy(policy_id)
        ids = [p.id, *p.snapshot_ids]
        ids += [UUID(r) for r in Records(runtime.views).restore_ids_of_policy(policy_id)]
        return runtime.eventlog.for_aggregates(ids, after, limit)

    return fetch


def _tail(runtime: Runtime, fetch: EventFetch, limit: int, scoped: bool) -> list[Row]:
    """The latest `limit` events, like `tail`: what an operator looks for first."""
    if scoped:  # a policy's log is bounded (progress events are throttled): read it through
        last: deque[Row] = deque(maxlen=limit)
        after = 0
        while batch := fetch(after, MAX_PAGE):
            last.extend(batch)
            after = batch[-1]["position"]
        return list(last)
    top = runtime.app.recorder.max_notification_id() or 0
    span = limit
    while True:  # positions may have gaps (PostgreSQL sequences): widen until enough
        start = max(0, top - span)
        entries = fetch(start, span)
        if len(entries) >= limit or start == 0:
            return entries[-limit:]
        span *= 2


def event_line(e: Row) -> str:
    return f"{e['position']:>8}  {_when(e['time'])}  {e['type']:<22} {_text(e['actor']):<16} {e['message']}"


EVENT_HEADER = f"{'POSITION':>8}  {'TIME (UTC)':<19}  {'TYPE':<22} {'ACTOR':<16} MESSAGE"


def _emit_events(entries: list[Row], as_json: bool) -> None:
    for e in entries:
        print(json.dumps(e, default=str) if as_json else event_line(e), flush=True)


def cmd_events(args: argparse.Namespace, runtime: Runtime) -> int:
    fetch = _event_source(runtime, args.policy)
    if args.after is None:
        entries = _tail(runtime, fetch, args.limit, args.policy is not None)
    else:
        entries = fetch(args.after, args.limit)
    if not args.json:
        print(EVENT_HEADER)
    _emit_events(entries, args.json)
    if not args.follow:
        return 0
    return _follow(fetch, entries[-1]["position"] if entries else (args.after or 0), args.json)


def _follow(fetch: EventFetch, after: int, as_json: bool) -> int:
    """Polls for events after `after` until Ctrl-C."""
    try:
        while True:
            batch = fetch(after, MAX_PAGE)
            _emit_events(batch, as_json)
            if batch:
                after = batch[-1]["position"]
            if len(batch) < MAX_PAGE:
                display._pause(FOLLOW_SECONDS)
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------ parsers


def _add_events(sub: Any) -> None:
    events = sub.add_parser(
        "events",
        parents=[_reading()],
        help="the Event Log (latest events, or from --after); -o json prints one JSON object a line",
    )
    events.add_argument("--policy", help="only this policy's cycle: policy, snapshots, restores")
    events.add_argument(
        "--after", type=_count(0, 2**63 - 1), help="events after this position (oldest first)"
    )
    events.add_argument("--limit", type=_count(1, 10_000), default=50)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    events.set_defaults(func=_verb(cmd_events))
