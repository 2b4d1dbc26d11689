"""Snapshots and restores: take, stop, delete, restore, and the Backup and Restore Records."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import (
    _collect,
    _count,
    _error,
    _mutated,
    _mutating,
    _reading,
    _verb,
    _waiting,
    once,
    resolve_policy,
    resolve_snapshot,
)
from api.cli.display import wait_for_run
from api.cli.tables import BACKUP_COLUMNS, RESTORE_COLUMNS, _error_column, _print_rows, print_plan
from api.records import BACKUP_STATUSES
from api.runtime import Runtime


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


def _run_filters(args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    policy_id = resolve_policy(runtime, args.policy) if args.policy else None
    return {"policy_id": policy_id, "status": args.status}


def cmd_backups(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "backups", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, BACKUP_COLUMNS + _error_column(rows), "backups", args.json)


def cmd_restores(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "restores", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, RESTORE_COLUMNS + _error_column(rows), "restores", args.json)


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
