"""`snapledger policy create|list|show|edit|stop|rebuild|delete`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from api.cli.answers import answer
from api.cli.common import (
    Row,
    _collect,
    _count,
    _mutating,
    _print_json,
    _reading,
    _verb,
    _waiting,
    once,
    resolve_policy,
)
from api.cli.tables import (
    BACKUP_COLUMNS,
    POLICY_COLUMNS,
    _collections_text,
    _print_rows,
    _retention_text,
    _schedule_text,
    _text,
    _when,
    print_plan,
    table,
)
from api.records import Records
from api.runtime import Runtime
from domain.errors import NotFound
from domain.policy import POLICY_STATUSES
from domain.values import is_digits


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
    return answer(args, runtime, outcome, f"created policy {args.name}: {outcome.id}", ("policy", outcome.id))


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
    changed = runtime.app.get_policy(policy_id).version != before
    text = f"{'edited' if changed else 'nothing changed in'} policy {args.policy}: {outcome.id}"
    return answer(args, runtime, outcome, text, ("policy", outcome.id))


def cmd_policy_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(runtime, args, runtime.app.stop_policy, resolve_policy(runtime, args.policy), args.actor)
    text = f"stopped policy {args.policy}: {outcome.id} (its running snapshots are asked to stop)"
    return answer(args, runtime, outcome, text, ("policy", outcome.id))


def cmd_policy_rebuild(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.rebuild_policy, resolve_policy(runtime, args.policy), args.actor
    )
    snapshot_id = outcome.extra["snapshot_id"]
    name = runtime.app.get_snapshot(snapshot_id).sub_name
    text = f"rebuilding policy {args.policy}: snapshot {name} requested: {snapshot_id}"
    return answer(args, runtime, outcome, text, ("snapshot", snapshot_id), wait=args.wait)


def cmd_policy_drill(args: argparse.Namespace, runtime: Runtime) -> int:
    """A restore drill of the policy's newest completed snapshot; with --wait, its verdict
    (exit 0 when it passed, 1 when it failed or was stopped)."""
    from api.http.drills import drill_record

    options = {"target": args.target, "checks": args.check}  # None: the policy's drill setting
    outcome = once(
        runtime, args, runtime.app.request_drill, resolve_policy(runtime, args.policy), options, args.actor
    )
    drill = runtime.app.get_drill(outcome.id)
    if not args.json:
        print(
            f"drill of {drill.sub_name} into {drill.target} requested: {outcome.id} (scratch {drill.scratch})"
        )
    while args.wait and drill.status in ("requested", "running"):
        time.sleep(0.5)
        drill = runtime.app.get_drill(outcome.id)
    if args.json:
        _print_json({**outcome.as_dict(), "record": drill_record(drill)})
    elif args.wait:
        if drill.status == "completed":
            rows = sum(c["rows"] for c in (drill.result or {}).get("collections", {}).values())
            print(f"passed: {rows} rows equal to the archive, restored in {drill.rto_seconds} s")
        else:
            print(f"{drill.status}: {drill.reason or ''}")
    return 0 if not args.wait or drill.status == "completed" else 1


def cmd_policy_delete(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.dry_run:
        policy_id = resolve_policy(runtime, args.policy)
        plan = runtime.delete_policy(policy_id, args.keep_files, args.actor, dry_run=True).extra
        return print_plan(plan, args.json)
    outcome = once(
        runtime,
        args,
        runtime.delete_policy,
        resolve_policy(runtime, args.policy),
        args.keep_files,
        args.actor,
    )
    removed = outcome.extra["archives_removed"]
    files = "archives kept" if args.keep_files else f"{removed} archive(s) removed"
    text = f"deleted policy {args.policy}: {outcome.id} ({files})"
    return answer(args, runtime, outcome, text, ("policy", outcome.id))


def _policy_options(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("--source", required=create, help="configured source name")
    p.add_argument("--storage", required=create, help="configured storage location name")
    p.add_argument("--schedule", help="cron text, e.g. '0 3 * * *' or @daily ('' removes the schedule)")
    p.add_argument("--timezone", help="IANA zone the schedule fires in (default UTC)")
    p.add_argument("--keep-last", metavar="N", help="keep the N newest completed snapshots ('none' clears)")
    p.add_argument("--expire-after", metavar="AGE", help="e.g. 30d, 12h, 2w ('none' clears)")
    for flag, what in (
        ("--include", "only these collections (names or patterns: shop.*)"),
        ("--exclude", "never these collections (names or patterns)"),
    ):
        p.add_argument(
            flag, nargs="*", action="extend", metavar="C", help=f"{what} (given with no names: clears)"
        )


def _add_policy(sub: Any) -> None:
    policy = sub.add_parser(
        "policy", help="create, list, show, edit, stop, rebuild, drill or delete policies"
    )
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

    drill = verbs.add_parser(
        "drill", parents=[_mutating(), _waiting()],
        help="restore the newest completed snapshot into a scratch copy, check it row for row, remove it",
    )  # fmt: skip
    drill.add_argument("policy", **ref)
    drill.add_argument(
        "--target", help="the drill target (a configured restore target); default: the policy's"
    )
    drill.add_argument(
        "--check", action="append", metavar="SQL", help="a query that must answer a truthy value (repeatable)"
    )
    drill.set_defaults(func=_verb(cmd_policy_drill))

    delete = verbs.add_parser("delete", parents=[_mutating()], help="delete a policy and its archives")
    delete.add_argument("policy", **ref)
    delete.add_argument("--keep-files", action="store_true", help="leave the archives in storage")
    delete.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    delete.set_defaults(func=_verb(cmd_policy_delete))
