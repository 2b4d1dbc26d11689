"""Operator verbs of the `snapledger` CLI: policies, snapshots, restores, records and events.

They work on the configured event store and views directly (no API server needed), so an
operator can drive a cycle from a shell on any host that has the configuration. Every
mutation records `--actor` (default `cli:<OS user>`) and brings the views up to date before
answering, so the next command reads what this one did.

Exit codes: 0 ok; 1 a waited run failed or was stopped, or storage failed; 2 bad input
(domain validation, unknown policy or snapshot); 130 Ctrl-C while waiting or following.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import getpass
import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO
from uuid import UUID, uuid4

from api.availability import UNAVAILABLE
from api.config import load_config
from api.records import BACKUP_STATUSES, POLICY_STATUSES, Records
from api.runtime import Runtime
from domain.application import Outcome
from domain.errors import DomainError, NotFound
from domain.idempotency import RequestKey
from domain.run import COMPLETED, REQUESTED, RUNNING
from domain.values import is_digits
from transfer.storage import StorageError

POLL_SECONDS = 0.25  # how often --wait re-reads the run
FOLLOW_SECONDS = 0.5  # how often --follow asks for new events
LINE_SECONDS = 1.0  # plain progress lines at most this often
QUIET_LINE_SECONDS = 30.0  # ...but at least this often, so a slow step does not look hung
NO_WORKER_HINT_SECONDS = 10.0
MAX_PAGE = 500

Verb = Callable[[argparse.Namespace, Runtime], int]
Row = dict[str, Any]
Column = tuple[str, Callable[[Row], str], bool]  # header, cell, right-aligned


# ---------------------------------------------------------------- plumbing
def _error(message: str, code: int) -> int:
    print(f"snapledger: error: {message}", file=sys.stderr)
    return code


def domain_message(e: DomainError) -> str:
    """Names the field the way the domain does, unless the message already starts with it."""
    if e.field and e.field != "id" and not e.message.startswith(e.field):
        return f"{e.field}: {e.message}"
    return e.message


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (e.g. a container without a passwd entry)
        user = "unknown"
    return f"cli:{user}"


@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Runtime]:
    """A runtime whose views are current, without the background threads `serve` starts."""
    runtime = Runtime.build(load_config(args.config))
    try:
        runtime.runner.catch_up()
        yield runtime
    finally:
        runtime.close()


def _verb(fn: Verb) -> Callable[[argparse.Namespace], int]:
    """Maps what can go wrong to exit codes once, instead of in every verb."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            with _opened(args) as runtime:
                return fn(args, runtime)
        except DomainError as e:
            return _error(domain_message(e), 2)
        except StorageError as e:
            return _error(f"storage: {e}", 1)
        except UNAVAILABLE as e:
            return _error(f"the event store does not answer: {_reason(e)}", 1)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        except BrokenPipeError:  # `snapledger events | head`: the reader has gone
            _silence_stdout()
            return 141

    return run


def _reason(e: BaseException) -> str:
    """The driver's first line (libpq never repeats a password in it)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}".rstrip(": ")


RETRY_SECONDS = 30.0  # how long a mutation is retried while the database does not answer


def once(runtime: Runtime, args: argparse.Namespace, command: Callable[..., Outcome], *given: Any) -> Outcome:
    """A mutation under a request key of its own, retried under that key while the
    database does not answer: a commit whose answer was lost is found, not repeated."""
    digest = hashlib.sha256(json.dumps([command.__name__, given], default=str, sort_keys=True).encode())
    verb = " ".join(str(getattr(args, k)) for k in ("command", "action") if getattr(args, k, None))
    key = RequestKey(f"cli-{uuid4()}", args.actor, digest.hexdigest(), f"snapledger {verb}", given=False)
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            return runtime.app.keyed(key, command, *given)
        except UNAVAILABLE as e:
            if time.monotonic() > deadline:
                raise
            print(f"the event store does not answer ({_reason(e)}); retrying", file=sys.stderr)
            key = dataclasses.replace(key, given=True)  # from now on, look for the first commit
            time.sleep(1.0)


def _silence_stdout() -> None:
    """Keeps Python from failing again on flushing a closed pipe at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _parse_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def resolve_policy(runtime: Runtime, ref: str) -> str:
    """A policy id, or the name of a live policy (names are unique among live ones,
    case-insensitively, as the name claims are)."""
    uid = _parse_uuid(ref)
    if uid is not None:
        try:
            return str(runtime.app.get_policy(uid).id)
        except NotFound:
            pass
    rows = runtime.views.query(
        "SELECT id FROM policies WHERE status != 'deleted' AND lower(name) = %(n)s", {"n": ref.lower()}
    )
    if not rows:
        raise NotFound(f"policy {ref!r} not found: no policy has that id, nor a live one that name", "policy")
    policy_id: str = rows[0]["id"]  # the views keep ids as text
    return policy_id


def resolve_snapshot(runtime: Runtime, ref: str) -> str:
    """A snapshot id, or its task name as the tables show it (e.g. nightly#3)."""
    if _parse_uuid(ref) is not None:
        return ref
    rows = runtime.views.query(
        "SELECT id FROM backup_records WHERE sub_name = %(s)s AND status != 'deleted' "
        "ORDER BY created_at DESC LIMIT 1",
        {"s": ref},
    )
    if not rows:
        raise NotFound(f"snapshot {ref!r} not found: no snapshot has that id or task name", "snapshot")
    snapshot_id: str = rows[0]["id"]  # the views keep ids as text
    return snapshot_id


def _mutated(runtime: Runtime) -> None:
    """The views (and so every worker's task queue) see the change before we answer."""
    runtime.runner.catch_up()


# -------------------------------------------------------------- formatting
def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _period(seconds: int | None) -> str:
    """Retention periods back in the units an operator typed them in."""
    if not seconds:
        return "-"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(rows: list[Row], columns: list[Column]) -> str:
    cells = [[cell(r) for _, cell, _ in columns] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (h, _, _) in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, _, right) in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([h for h, _, _ in columns]), *(line(c) for c in cells)])


def _print_rows(rows: list[Row], columns: list[Column], what: str, as_json: bool) -> int:
    if as_json:
        _print_json(rows)
    elif rows:
        print(table(rows, columns))
    else:
        print(f"no {what}")
    return 0


def _percent(r: Row) -> str:
    return f"{r['progress']:.0f}%" if r.get("progress") is not None else "-"


def _error_column(rows: list[Row]) -> list[Column]:
    """Errors only take room when some row has one."""
    if not any(r.get("error") for r in rows):
        return []
    return [("ERROR", lambda r: _text(r.get("error"))[:80], False)]


def _retention_text(retention: dict[str, Any]) -> str:
    parts = []
    if retention.get("keep_last"):
        parts.append(f"keep {retention['keep_last']}")
    if retention.get("expire_after_seconds"):
        parts.append(f"expire {_period(retention['expire_after_seconds'])}")
    return ", ".join(parts) or "-"


def _collections_text(collections: dict[str, Any]) -> str:
    include, exclude = collections.get("include") or [], collections.get("exclude") or []
    text = ", ".join(include) if include else "all"
    return text + (f" except {', '.join(exclude)}" if exclude else "")


def _schedule_text(r: Row) -> str:
    if not r.get("schedule"):
        return "-"
    return r["schedule"] if r.get("timezone") in (None, "UTC") else f"{r['schedule']} ({r['timezone']})"


POLICY_COLUMNS: list[Column] = [
    ("ID", lambda r: r["id"], False),
    ("NAME", lambda r: r["name"], False),
    ("STATUS", lambda r: r["status"], False),
    ("SOURCE", lambda r: r["source"], False),
    ("STORAGE", lambda r: r["storage"], False),
    ("SCHEDULE", _schedule_text, False),
    ("NEXT RUN", lambda r: _when(r["next_run_at"]), False),
    ("RETENTION", lambda r: _retention_text(r["retention"]), False),
    ("SNAPSHOTS", lambda r: str(r["snapshots_count"]), True),
    ("LAST SUCCESS", lambda r: _when(r["last_success_at"]), False),
]


def _run_columns(extra: list[Column], last: Column) -> list[Column]:
    """Backup and Restore Records share every column but one after the name, and the last."""
    return [
        ("ID", lambda r: r["id"], False),
        ("SUB NAME", lambda r: r["sub_name"], False),
        *extra,
        ("STATUS", lambda r: r["status"], False),
        ("PROGRESS", _percent, True),
        ("ITEMS", lambda r: f"{r['items']:,}" if r.get("items") is not None else "-", True),
        ("TRANSFERRED", lambda r: human_size(r["transferred_bytes"]), True),
        ("ELAPSED", lambda r: human_duration(r["elapsed_seconds"]), True),
        ("CREATED (UTC)", lambda r: _when(r["created_at"]), False),
        last,
    ]


BACKUP_COLUMNS = _run_columns([], ("FILE NAME", lambda r: r["file_name"], False))


def _consistency_text(r: Row) -> str:
    check = r.get("consistency")
    if not check:
        return "-"
    bad = [name for name, c in check.items() if not c.get("ok")]
    return f"mismatch: {', '.join(bad)}" if bad else f"ok ({len(check)})"


RESTORE_COLUMNS = _run_columns(
    [("TARGET", lambda r: r["target"], False)], ("CHECK", _consistency_text, False)
)


# --------------------------------------------------------------- progress
def _rate(items: int, nbytes: int, elapsed: float) -> str:
    """Bytes per second; items per second while a run has written no archive bytes yet
    (a backup stages compressed collections before it appends them)."""
    if elapsed <= 0:
        return "-/s"
    if nbytes > 0:
        return f"{human_size(int(nbytes / elapsed))}/s"
    return f"{items / elapsed:,.0f} items/s"


def _stats(percent: float, items: int, nbytes: int, elapsed: float) -> str:
    rate = _rate(items, nbytes, elapsed)
    if 0 < percent < 100 and elapsed > 0:
        eta = _clock(elapsed * (100 - percent) / percent)
    else:
        eta = "0:00" if percent >= 100 else "--:--"
    return f"{items:,} items  {human_size(nbytes)}  {rate}  ETA {eta}"


def render_progress(percent: float, items: int, nbytes: int, elapsed: float, width: int = 24) -> str:
    """One terminal line: percent, bar, items, bytes, rate and time left."""
    filled = int(width * min(max(percent, 0.0), 100.0) / 100)
    bar = "#" * filled + "-" * (width - filled)
    return f"{percent:5.1f}% [{bar}] {_stats(percent, items, nbytes, elapsed)}"


def progress_line(name: str, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> str:
    """A plain line for logs and pipes."""
    if status == REQUESTED:
        return f"{name} requested: waiting for a worker ({human_duration(elapsed)})"
    return f"{name} {status} {percent:.1f}%  {_stats(percent, items, nbytes, elapsed)}"


class Display(Protocol):
    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None: ...
    def clear(self) -> None: ...


class BarDisplay:
    """A live single line, redrawn in place with \\r on a terminal."""

    def __init__(self, name: str, out: TextIO, columns: int | None = None) -> None:
        self.name, self.out, self.width = name, out, 0
        self.columns = columns or shutil.get_terminal_size().columns

    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None:
        room = max(self.columns - 1, 20)  # a line that wraps is redrawn as two
        if status == REQUESTED:
            line = progress_line(self.name, status, percent, items, nbytes, elapsed)
        else:
            line = f"{self.name} {render_progress(percent, items, nbytes, elapsed)}"
            if len(line) > room:  # the bar gives way first, down to 6 cells
                bar = max(24 - (len(line) - room), 6)
                line = f"{self.name} {render_progress(percent, items, nbytes, elapsed, width=bar)}"
        line = line if len(line) <= room else line[: room - 1] + "…"
        self.out.write("\r" + line.ljust(self.width))
        self.out.flush()
        self.width = len(line)

    def clear(self) -> None:
        """Blanks the line, so a hint or the final line takes its place."""
        if self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()
            self.width = 0


class LineDisplay:
    """Plain lines when something changed, at most once a second (pipes, CI logs)."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name, self.out = name, out
        self.last_at = -QUIET_LINE_SECONDS
        self.last: tuple[Any, ...] | None = None

    def update(self, status: str, percent: float, items: int, nbytes: int, elapsed: float) -> None:
        now = time.monotonic()
        key = (status, percent, items, nbytes)
        since = now - self.last_at
        if since < LINE_SECONDS or (key == self.last and since < QUIET_LINE_SECONDS):
            return
        print(progress_line(self.name, status, percent, items, nbytes, elapsed), file=self.out, flush=True)
        self.last_at, self.last = now, key

    def clear(self) -> None:
        pass


def _pause(seconds: float) -> None:
    """The one place the waiting loops sleep (tests replace it)."""
    time.sleep(seconds)


def _elapsed(run: Any) -> float:
    started = getattr(run, "started_at", None)
    return max(0.0, (datetime.now(UTC) - started).total_seconds()) if started else 0.0


def wait_for_run(runtime: Runtime, kind: str, run_id: UUID | str) -> int:
    """Follows a snapshot or restore to its end; Ctrl-C stops the waiting, not the run."""
    load = runtime.app.get_snapshot if kind == "snapshot" else runtime.app.get_restore
    run = load(run_id)
    out = sys.stdout
    display: Display = BarDisplay(run.sub_name, out) if out.isatty() else LineDisplay(run.sub_name, out)
    began, hinted = time.monotonic(), False
    try:
        while run.status in (REQUESTED, RUNNING):
            if not hinted and run.status == REQUESTED and time.monotonic() - began >= NO_WORKER_HINT_SECONDS:
                display.clear()
                print(
                    f"snapledger: {run.sub_name} is still waiting after {NO_WORKER_HINT_SECONDS:.0f}s: "
                    "no worker seems to be running (start `snapledger worker` or `snapledger serve`)",
                    file=sys.stderr,
                    flush=True,
                )
                hinted = True
            # While queued, the time shown is how long we have waited for a worker.
            elapsed = time.monotonic() - began if run.status == REQUESTED else _elapsed(run)
            display.update(run.status, run.percent, run.items, run.bytes, elapsed)
            _pause(POLL_SECONDS)
            run = load(run_id)
    except KeyboardInterrupt:
        display.clear()
        print(
            f"stopped waiting; {kind} {run.sub_name} goes on ({run.status}, {run.percent:.0f}%)",
            file=sys.stderr,
        )
        return 130
    display.clear()
    return _run_ended(runtime, kind, run)


def _run_ended(runtime: Runtime, kind: str, run: Any) -> int:
    """The completion line, or the error (exit 1) of a failed, stopped or deleted run."""
    runtime.runner.catch_up()
    record = Records(runtime.views).one("backups" if kind == "snapshot" else "restores", str(run.id)) or {}
    elapsed = human_duration(record.get("elapsed_seconds"))
    if run.status != COMPLETED:
        reason = record.get("error") or getattr(run, "reason", None)
        return _error(f"{kind} {run.sub_name} {run.status}" + (f": {reason}" if reason else ""), 1)
    if kind == "snapshot":
        print(
            f"{run.sub_name} completed: {run.items:,} items, {human_size(run.bytes)} in {elapsed} "
            f"-> {record.get('file_name') or run.file_name}"
        )
        return 0
    for name, check in (record.get("consistency") or {}).items():
        found = check.get("would_write", check.get("found"))
        print(f"  {name}: {found} of {check.get('expected')} items {'ok' if check.get('ok') else 'MISMATCH'}")
    schema = record.get("schema") or {}
    for skipped in schema.get("skipped", []):
        print(f"  skipped {skipped['object']}: {skipped['reason']}")
    if schema.get("missing_roles"):
        print(f"  roles the target lacks: {', '.join(schema['missing_roles'])}")
    done = "dry run completed" if run.dry_run else "completed and verified"
    print(f"{run.sub_name} {done}: {run.items:,} items, {human_size(run.bytes)} in {elapsed}")
    return 0


# ---------------------------------------------------------------- policies
def _setting(raw: str | None, current: Any) -> Any:
    """Option text to a domain value: absent keeps `current`, 'none' clears, digits are numbers;
    anything else goes to the domain as typed, so its validation message names the field."""
    if raw is None:
        return current
    if raw.strip().lower() == "none":
        return None
    return int(raw) if is_digits(raw.strip().lstrip("-")) else raw


def _with_unit(seconds: int | None) -> str | None:
    """A kept expiry goes back to the domain as a duration with its unit, as any other."""
    return None if seconds is None else f"{seconds}s"


def _retention(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any] | None:
    if args.keep_last is None and args.expire_after is None:
        return None
    return {
        "keep_last": _setting(args.keep_last, current.get("keep_last")),
        "expire_after": _setting(args.expire_after, _with_unit(current.get("expire_after_seconds"))),
    }


def _collections(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any] | None:
    if args.include is None and args.exclude is None:
        return None
    return {
        "include": current.get("include", []) if args.include is None else args.include,
        "exclude": current.get("exclude", []) if args.exclude is None else args.exclude,
    }


def policy_data(args: argparse.Namespace, current: Any = None) -> dict[str, Any]:
    """Only the fields the operator gave; retention and collections merge with `current` so
    `--keep-last 3` alone does not drop an expiry set earlier."""
    data = {k: getattr(args, k) for k in ("name", "source", "storage", "schedule", "timezone")}
    data = {k: v for k, v in data.items() if v is not None}
    retention = _retention(args, current.retention if current else {})
    if retention is not None:
        data["retention"] = retention
    collections = _collections(args, current.collections if current else {})
    if collections is not None:
        data["collections"] = collections
    return data


def cmd_policy_create(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(runtime, args, runtime.app.create_policy, policy_data(args), args.actor)
    _mutated(runtime)
    print(f"created policy {args.name}: {outcome.id}")
    return 0


def cmd_policy_list(args: argparse.Namespace, runtime: Runtime) -> int:
    def keep(r: Row) -> bool:
        return args.all or args.status is not None or r["status"] != "deleted"

    rows = _collect(runtime, "policies", {"status": args.status}, args.limit, keep)
    return _print_rows(rows, POLICY_COLUMNS, "policies", args.json)


def _policy_fields(p: Row) -> list[tuple[str, str]]:
    failure = _when(p["last_failure_at"])
    if p["last_failure_reason"]:
        failure += f" ({p['last_failure_reason']})"
    return [
        ("id", p["id"]),
        ("name", p["name"]),
        ("status", p["status"]),
        ("source", p["source"]),
        ("storage", p["storage"]),
        ("schedule", _schedule_text(p)),
        ("next run (UTC)", _when(p["next_run_at"])),
        ("retention", _retention_text(p["retention"])),
        ("collections", _collections_text(p["collections"])),
        ("snapshots", f"{p['snapshots_count']} (rebuilt {p['rebuilds']} times)"),
        ("last success", _when(p["last_success_at"])),
        ("last failure", failure),
        ("created (UTC)", f"{_when(p['created_at'])} by {_text(p['created_by'])}"),
        ("updated (UTC)", _when(p["updated_at"])),
    ]


def cmd_policy_show(args: argparse.Namespace, runtime: Runtime) -> int:
    policy = Records(runtime.views).one("policies", resolve_policy(runtime, args.policy))
    if policy is None:  # in the store but not yet in the view: catch_up ran, so never expected
        raise NotFound(f"policy {args.policy!r} is not in the Policies view", "policy")
    if args.json:
        _print_json(policy)
        return 0
    width = max(len(k) for k, _ in _policy_fields(policy))
    for key, value in _policy_fields(policy):
        print(f"{key.ljust(width)}  {value}")
    recent = _collect(runtime, "backups", {"policy_id": policy["id"]}, 5)
    if recent:
        print("\nrecent snapshots:")
        print(table(recent, BACKUP_COLUMNS))
    return 0


def cmd_policy_edit(args: argparse.Namespace, runtime: Runtime) -> int:
    policy_id = resolve_policy(runtime, args.policy)
    current = runtime.app.get_policy(policy_id)
    before = current.version
    outcome = once(runtime, args, runtime.app.edit_policy, policy_id, policy_data(args, current), args.actor)
    _mutated(runtime)
    changed = runtime.app.get_policy(policy_id).version != before
    print(f"{'edited' if changed else 'nothing changed in'} policy {args.policy}: {outcome.id}")
    return 0


def cmd_policy_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(runtime, args, runtime.app.stop_policy, resolve_policy(runtime, args.policy), args.actor)
    _mutated(runtime)
    print(f"stopped policy {args.policy}: {outcome.id} (its running snapshots are asked to stop)")
    return 0


def cmd_policy_rebuild(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.rebuild_policy, resolve_policy(runtime, args.policy), args.actor
    )
    _mutated(runtime)
    snapshot_id = outcome.extra["snapshot_id"]
    name = runtime.app.get_snapshot(snapshot_id).sub_name
    print(f"rebuilding policy {args.policy}: snapshot {name} requested: {snapshot_id}")
    return wait_for_run(runtime, "snapshot", snapshot_id) if args.wait else 0


def print_plan(plan: dict[str, Any], as_json: bool = False) -> int:
    """What a delete or retention pass removes (or, in a dry run, would remove)."""
    if as_json:
        _print_json(plan)
        return 0
    verb = "would delete" if plan["dry_run"] else "deleted"
    for row in plan["snapshots"]:
        refused = f"  REFUSED: {row['refused']}" if "refused" in row else ""
        print(f"{verb}  {row['sub_name']}  {human_size(row['bytes'])}  {row['archive_key']}{refused}")
    print(f"{plan['count']} snapshot(s), {human_size(plan['bytes'])} of archives")
    return 0


def cmd_policy_delete(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.dry_run:
        policy_id = resolve_policy(runtime, args.policy)
        return print_plan(runtime.delete_policy(policy_id, args.keep_files, args.actor, dry_run=True).extra)
    outcome = once(
        runtime,
        args,
        runtime.delete_policy,
        resolve_policy(runtime, args.policy),
        args.keep_files,
        args.actor,
    )
    removed = outcome.extra["archives_removed"]
    _mutated(runtime)
    files = "archives kept" if args.keep_files else f"{removed} archive(s) removed"
    print(f"deleted policy {args.policy}: {outcome.id} ({files})")
    return 0


# ------------------------------------------------------- snapshots, restores
def cmd_snapshot_take(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.request_snapshot, resolve_policy(runtime, args.policy), args.actor
    )
    _mutated(runtime)
    print(f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name} requested: {outcome.id}")
    return wait_for_run(runtime, "snapshot", outcome.id) if args.wait else 0


def cmd_snapshot_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.stop_snapshot, resolve_snapshot(runtime, args.snapshot), args.actor
    )
    _mutated(runtime)
    print(f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name}: stop requested")
    return 0


def cmd_snapshot_delete(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.dry_run:
        snapshot_id = resolve_snapshot(runtime, args.snapshot)
        return print_plan(runtime.delete_snapshot(snapshot_id, args.actor, dry_run=True).extra)
    outcome = once(
        runtime, args, runtime.delete_snapshot, resolve_snapshot(runtime, args.snapshot), args.actor
    )
    _mutated(runtime)
    print(f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name}: deleted")
    return 0


def cmd_restore_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(runtime, args, runtime.app.stop_restore, args.restore, args.actor)
    _mutated(runtime)
    print(f"restore {runtime.app.get_restore(outcome.id).sub_name}: stop requested")
    return 0


def _mapping(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old:
            raise argparse.ArgumentTypeError(f"--map takes OLD=NEW, got {pair!r}")
        out[old] = new
    return out


def cmd_restore(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        mapping = _mapping(args.map)
    except argparse.ArgumentTypeError as e:
        return _error(f"mapping: {e}", 2)
    options: dict[str, Any] = {"collections": args.collections or None, "dry_run": args.dry_run}
    options.update({k: v for k, v in (("mapping", mapping), ("existing", args.existing)) if v is not None})
    if args.keep_owners is not None:
        options["keep_owners"] = args.keep_owners
    if args.trust_unverified:
        options["trust_unverified"] = True
    snapshot_id = resolve_snapshot(runtime, args.snapshot)
    outcome = once(runtime, args, runtime.app.request_restore, snapshot_id, args.target, options, args.actor)
    _mutated(runtime)
    print(f"restore {runtime.app.get_restore(outcome.id).sub_name} requested: {outcome.id}")
    return wait_for_run(runtime, "restore", outcome.id) if args.wait else 0


def _collect(
    runtime: Runtime,
    kind: str,
    filters: dict[str, Any],
    limit: int,
    keep: Callable[[Row], bool] | None = None,
) -> list[Row]:
    """Newest first, paging through the view until `limit` rows pass `keep`."""
    records, cursor = Records(runtime.views), None
    out: list[Row] = []
    while len(out) < limit:
        batch, nxt = records.page(kind, dict(filters), cursor, min(MAX_PAGE, limit))
        out += [r for r in batch if keep is None or keep(r)]
        if nxt is None or not batch:
            break
        cursor = (batch[-1]["created_at"], batch[-1]["id"])
    return out[:limit]


def _run_filters(args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    policy_id = resolve_policy(runtime, args.policy) if args.policy else None
    return {"policy_id": policy_id, "status": args.status}


def cmd_backups(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "backups", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, BACKUP_COLUMNS + _error_column(rows), "backups", args.json)


def cmd_restores(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "restores", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, RESTORE_COLUMNS + _error_column(rows), "restores", args.json)


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
                _pause(FOLLOW_SECONDS)
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------ parsers
def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not is_digits(value) or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {value!r}")
        return int(value)

    return parse


def _common() -> argparse.ArgumentParser:
    """--config also after the verb (`snapledger policy list --config x.toml`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file")
    return p


def _mutating() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[_common()])
    p.add_argument(
        "--actor", default=default_actor(), help="who asks, recorded on every event (default: cli:<OS user>)"
    )
    return p


def _reading() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[_common()])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _waiting() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the run ends (exit 1 if it fails or is stopped; Ctrl-C stops waiting)",
    )
    return p


def _policy_options(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("--source", required=create, help="configured source name")
    p.add_argument("--storage", required=create, help="configured storage location name")
    p.add_argument("--schedule", help="cron text, e.g. '0 3 * * *' or @daily ('' removes the schedule)")
    p.add_argument("--timezone", help="IANA zone the schedule fires in (default UTC)")
    p.add_argument("--keep-last", metavar="N", help="keep the N newest completed snapshots ('none' clears)")
    p.add_argument("--expire-after", metavar="AGE", help="e.g. 30d, 12h, 2w ('none' clears)")
    for flag, what in (("--include", "only these collections"), ("--exclude", "never these collections")):
        p.add_argument(
            flag, nargs="*", action="extend", metavar="C", help=f"{what} (given with no names: clears)"
        )


def _add_policy(sub: Any) -> None:
    policy = sub.add_parser("policy", help="create, list, show, edit, stop, rebuild or delete policies")
    verbs = policy.add_subparsers(dest="action", required=True)
    ref = {"help": "policy id or name"}

    create = verbs.add_parser("create", parents=[_mutating()], help="define a backup policy")
    create.add_argument("name", help="policy name (letters, digits, '.', '_', '-')")
    _policy_options(create, create=True)
    create.set_defaults(func=_verb(cmd_policy_create))

    listing = verbs.add_parser("list", parents=[_reading()], help="the Policies view (deleted ones hidden)")
    listing.add_argument("--status", choices=POLICY_STATUSES)
    listing.add_argument("--all", action="store_true", help="include deleted policies")
    listing.add_argument("--limit", type=_count(1, 10_000), default=200)
    listing.set_defaults(func=_verb(cmd_policy_list))

    show = verbs.add_parser("show", parents=[_reading()], help="one policy and its recent snapshots")
    show.add_argument("policy", **ref)
    show.set_defaults(func=_verb(cmd_policy_show))

    edit = verbs.add_parser("edit", parents=[_mutating()], help="change any of the create options")
    edit.add_argument("policy", **ref)
    edit.add_argument("--name", help="new name")
    _policy_options(edit, create=False)
    edit.set_defaults(func=_verb(cmd_policy_edit))

    stop = verbs.add_parser(
        "stop", parents=[_mutating()], help="pause the schedule and stop running snapshots"
    )
    stop.add_argument("policy", **ref)
    stop.set_defaults(func=_verb(cmd_policy_stop))

    rebuild = verbs.add_parser(
        "rebuild", parents=[_mutating(), _waiting()], help="stop, clean and take a fresh snapshot"
    )
    rebuild.add_argument("policy", **ref)
    rebuild.set_defaults(func=_verb(cmd_policy_rebuild))

    delete = verbs.add_parser("delete", parents=[_mutating()], help="delete a policy and its archives")
    delete.add_argument("policy", **ref)
    delete.add_argument("--keep-files", action="store_true", help="leave the archives in storage")
    delete.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    delete.set_defaults(func=_verb(cmd_policy_delete))


def _add_runs(sub: Any) -> None:
    snapshot = sub.add_parser("snapshot", help="take a snapshot")
    snap_verbs = snapshot.add_subparsers(dest="action", required=True)
    take = snap_verbs.add_parser("take", parents=[_mutating(), _waiting()], help="take a snapshot now")
    take.add_argument("policy", help="policy id or name")
    take.set_defaults(func=_verb(cmd_snapshot_take))
    stop = snap_verbs.add_parser("stop", parents=[_mutating()], help="stop a queued or running snapshot")
    stop.add_argument("snapshot", help="snapshot id or task name (e.g. nightly#3)")
    stop.set_defaults(func=_verb(cmd_snapshot_stop))
    delete = snap_verbs.add_parser("delete", parents=[_mutating()], help="delete a snapshot and its archive")
    delete.add_argument("snapshot", help="snapshot id or task name (e.g. nightly#3)")
    delete.add_argument("--dry-run", action="store_true", help="show what would be deleted; change nothing")
    delete.set_defaults(func=_verb(cmd_snapshot_delete))
    stop_restore = sub.add_parser(
        "stop-restore", parents=[_mutating()], help="stop a queued or running restore"
    )
    stop_restore.add_argument("restore", help="restore id")
    stop_restore.set_defaults(func=_verb(cmd_restore_stop))

    restore = sub.add_parser("restore", parents=[_mutating(), _waiting()], help="restore a snapshot")
    restore.add_argument("snapshot", help="snapshot id or task name (e.g. nightly#3)")
    restore.add_argument("--target", required=True, help="configured restore target name")
    restore.add_argument("--collections", nargs="+", action="extend", metavar="C", help="only these")
    restore.add_argument("--map", nargs="+", action="extend", metavar="OLD=NEW", help="rename on the way in")
    restore.add_argument("--existing", help="what to do with existing data (overrides the target's setting)")
    restore.add_argument("--dry-run", action="store_true", help="verify and report; write nothing")
    owners = restore.add_mutually_exclusive_group()
    owners.add_argument(
        "--keep-owners", action="store_true", default=None, help="PostgreSQL: restore owners and grants too"
    )
    owners.add_argument(
        "--no-owners",
        dest="keep_owners",
        action="store_false",
        help="PostgreSQL: owners and grants of the restorer",
    )
    restore.add_argument(
        "--trust-unverified", action="store_true",
        help="restore a snapshot imported from storage without a signature (you know where it comes from)",
    )  # fmt: skip
    restore.set_defaults(func=_verb(cmd_restore))

    for name, statuses, func, what in (
        ("backups", BACKUP_STATUSES, cmd_backups, "Backup Records"),
        ("restores", BACKUP_STATUSES[:-1], cmd_restores, "Restore Records"),
    ):
        p = sub.add_parser(name, parents=[_reading()], help=f"{what}, newest first")
        p.add_argument("--policy", help="policy id or name")
        p.add_argument("--status", choices=statuses)
        p.add_argument("--limit", type=_count(1, 10_000), default=50)
        p.set_defaults(func=_verb(func))


def _add_events(sub: Any) -> None:
    events = sub.add_parser(
        "events",
        parents=[_reading()],
        help="the Event Log (latest events, or from --after); --json prints one JSON object a line",
    )
    events.add_argument("--policy", help="only this policy's cycle: policy, snapshots, restores")
    events.add_argument(
        "--after", type=_count(0, 2**63 - 1), help="events after this position (oldest first)"
    )
    events.add_argument("--limit", type=_count(1, 10_000), default=50)
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    events.set_defaults(func=_verb(cmd_events))


def register(sub: Any) -> None:
    """Adds the operator verbs to `snapledger`'s subcommands."""
    _add_policy(sub)
    _add_runs(sub)
    _add_events(sub)
