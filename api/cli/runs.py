"""`snapledger snapshot list|take|stop|delete|verify` and `snapledger restore list|create|stop`."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.answers import answer
from api.cli.common import (
    _collect,
    _count,
    _error,
    _mutating,
    _print_json,
    _reading,
    _verb,
    _waiting,
    once,
    resolve_policy,
    resolve_restore,
    resolve_snapshot,
)
from api.cli.tables import BACKUP_COLUMNS, RESTORE_COLUMNS, _error_column, _print_rows, print_plan
from api.records import BACKUP_STATUSES
from api.runtime import Runtime
from domain.run import HAS_ARCHIVE, RESTORE_STATUSES
from transfer.archive.crypto import EncryptionKeyError
from transfer.archive.format import ArchiveError
from transfer.runs.contract import ConsistencyError, Expected
from transfer.runs.verify import verify_archive
from transfer.storage import StorageError

SNAPSHOT_REF = "snapshot id or task name (e.g. nightly#3)"
VERIFY_HELP = "re-read a snapshot's archive and check every checksum and count"


# ------------------------------------------------------- snapshots, restores
def cmd_snapshot_take(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.request_snapshot, resolve_policy(runtime, args.policy), args.actor
    )
    text = f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name} requested: {outcome.id}"
    return answer(args, runtime, outcome, text, ("snapshot", outcome.id), wait=args.wait)


def cmd_snapshot_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.stop_snapshot, resolve_snapshot(runtime, args.snapshot), args.actor
    )
    text = f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name}: stop requested"
    return answer(args, runtime, outcome, text, ("snapshot", outcome.id))


def cmd_snapshot_delete(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.dry_run:
        snapshot_id = resolve_snapshot(runtime, args.snapshot)
        return print_plan(runtime.delete_snapshot(snapshot_id, args.actor, dry_run=True).extra, args.json)
    outcome = once(
        runtime, args, runtime.delete_snapshot, resolve_snapshot(runtime, args.snapshot), args.actor
    )
    text = f"snapshot {runtime.app.get_snapshot(outcome.id).sub_name}: deleted"
    return answer(args, runtime, outcome, text, ("snapshot", outcome.id))


def cmd_restore_stop(args: argparse.Namespace, runtime: Runtime) -> int:
    outcome = once(
        runtime, args, runtime.app.stop_restore, resolve_restore(runtime, args.restore), args.actor
    )
    text = f"restore {runtime.app.get_restore(outcome.id).sub_name}: stop requested"
    return answer(args, runtime, outcome, text, ("restore", outcome.id))


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
    if args.validate:
        options["validate"] = True
    if args.to_time is not None or args.to_lsn is not None:  # the positional names the policy
        policy_id = resolve_policy(runtime, args.snapshot)
        to = {"to_time": args.to_time} if args.to_time is not None else {"to_lsn": args.to_lsn}
        outcome = once(
            runtime, args, runtime.app.restore_to, policy_id, args.target, {**options, **to}, args.actor
        )
    else:
        snapshot_id = resolve_snapshot(runtime, args.snapshot)
        outcome = once(
            runtime, args, runtime.app.request_restore, snapshot_id, args.target, options, args.actor
        )
    text = f"restore {runtime.app.get_restore(outcome.id).sub_name} requested: {outcome.id}"
    return answer(args, runtime, outcome, text, ("restore", outcome.id), wait=args.wait)


def _run_filters(args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    policy_id = resolve_policy(runtime, args.policy) if args.policy else None
    return {"policy_id": policy_id, "status": args.status}


def cmd_backups(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "backups", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, BACKUP_COLUMNS + _error_column(rows), "backups", args.json)


def cmd_restores(args: argparse.Namespace, runtime: Runtime) -> int:
    rows = _collect(runtime, "restores", _run_filters(args, runtime), args.limit)
    return _print_rows(rows, RESTORE_COLUMNS + _error_column(rows), "restores", args.json)


def cmd_snapshot_verify(args: argparse.Namespace, runtime: Runtime) -> int:
    """Exit 0: archive intact; 1: archive damaged or incomplete; 2: bad input (a missing or
    wrong encryption key too: the archive may be intact)."""
    snap = runtime.app.get_snapshot(resolve_snapshot(runtime, args.snapshot))
    if snap.status not in HAS_ARCHIVE:
        return _error(f"snapshot {snap.sub_name} is {snap.status}: there is no archive to verify", 2)
    storage = runtime.resources.storages.get(snap.storage)
    if storage is None:
        return _error(f"storage {snap.storage!r} of {snap.sub_name} is not configured", 2)
    found: dict[str, Any] = {"id": str(snap.id), "snapshot": snap.sub_name, "archive_key": snap.archive_key}
    try:
        keyring = runtime.resources.keyrings.get(snap.storage)
        expected = Expected.of(snap, snap.archive_key)  # the events decide, not the sidecar
        result = verify_archive(storage, snap.archive_key, keyring=keyring, expected=expected)
    except EncryptionKeyError as e:
        return _error(f"cannot verify {snap.sub_name}: {e}", 2)
    except (ArchiveError, ConsistencyError, StorageError) as e:
        if args.json:
            _print_json({**found, "ok": False, "error": str(e)})
        else:
            print(f"DAMAGED {snap.sub_name} ({snap.archive_key}): {e}")
        return 1
    if args.json:
        items = {"items": result.items, "bytes": result.bytes, "collections": result.collections}
        _print_json({**found, "ok": True, **items})
        return 0
    for name, check in result.collections.items():
        print(f"ok  {name}: {check['found']} items")
    print(f"OK {snap.sub_name} ({snap.archive_key}): {result.items} items, {result.bytes} bytes verified")
    return 0


def _list_options(p: argparse.ArgumentParser, statuses: tuple[str, ...]) -> None:
    p.add_argument("--policy", help="policy id or name")
    p.add_argument("--status", choices=statuses)
    p.add_argument("--limit", type=_count(1, 10_000), default=50)


def _add_snapshot(sub: Any) -> None:
    snapshot = sub.add_parser("snapshot", help="Backup Records: list, take, stop, delete or verify snapshots")
    verbs = snapshot.add_subparsers(dest="action", required=True, metavar="VERB")
    listing = verbs.add_parser("list", parents=[_reading()], help="Backup Records, newest first")
    _list_options(listing, BACKUP_STATUSES)
    listing.set_defaults(func=_verb(cmd_backups))
    take = verbs.add_parser("take", parents=[_mutating(), _waiting()], help="take a snapshot now")
    take.add_argument("policy", help="policy id or name")
    take.set_defaults(func=_verb(cmd_snapshot_take))
    stop = verbs.add_parser("stop", parents=[_mutating()], help="stop a queued or running snapshot")
    stop.add_argument("snapshot", help=SNAPSHOT_REF)
    stop.set_defaults(func=_verb(cmd_snapshot_stop))
    delete = verbs.add_parser("delete", parents=[_mutating()], help="delete a snapshot and its archive")
    delete.add_argument("snapshot", help=SNAPSHOT_REF)
    delete.add_argument("--dry-run", action="store_true", help="show what would be deleted; change nothing")
    delete.set_defaults(func=_verb(cmd_snapshot_delete))
    verify = verbs.add_parser("verify", parents=[_reading()], help=VERIFY_HELP)
    verify.add_argument("snapshot", help=SNAPSHOT_REF)
    verify.set_defaults(func=_verb(cmd_snapshot_verify))


def _restore_options(create: argparse.ArgumentParser) -> None:
    create.add_argument(
        "snapshot", help=SNAPSHOT_REF + "; with --to-time or --to-lsn, the policy (name or id)"
    )
    moment = create.add_mutually_exclusive_group()
    moment.add_argument(
        "--to-time", metavar="TIME",
        help="a continuous policy: restore to this moment (ISO 8601 with offset, e.g. 2026-12-01T10:00:00Z)",
    )  # fmt: skip
    moment.add_argument("--to-lsn", metavar="LSN", help="a continuous policy: restore to this WAL position")
    create.add_argument("--target", required=True, help="configured restore target name")
    create.add_argument(
        "--collections",
        nargs="+",
        action="extend",
        metavar="C",
        help="only these: names or patterns (shop.*)",
    )
    create.add_argument("--map", nargs="+", action="extend", metavar="OLD=NEW", help="rename on the way in")
    create.add_argument("--existing", help="what to do with existing data (overrides the target's setting)")
    create.add_argument("--dry-run", action="store_true", help="verify and report; write nothing")
    owners = create.add_mutually_exclusive_group()
    owners.add_argument(
        "--keep-owners", action="store_true", default=None, help="PostgreSQL: restore owners and grants too"
    )
    owners.add_argument(
        "--no-owners",
        dest="keep_owners",
        action="store_false",
        help="PostgreSQL: owners and grants of the restorer",
    )
    create.add_argument(
        "--trust-unverified", action="store_true",
        help="restore a snapshot imported from storage without a signature (you know where it comes from)",
    )  # fmt: skip
    create.add_argument(
        "--validate", action="store_true",
        help="MongoDB: apply the target's validators; the documents they refuse are counted on the record",
    )  # fmt: skip
    create.set_defaults(func=_verb(cmd_restore))


def _add_restore(sub: Any) -> None:
    restore = sub.add_parser("restore", help="Restore Records: list, create or stop restores")
    verbs = restore.add_subparsers(dest="action", required=True, metavar="VERB")
    listing = verbs.add_parser("list", parents=[_reading()], help="Restore Records, newest first")
    _list_options(listing, RESTORE_STATUSES)
    listing.set_defaults(func=_verb(cmd_restores))
    _restore_options(
        verbs.add_parser("create", parents=[_mutating(), _waiting()], help="restore a snapshot into a target")
    )
    stop = verbs.add_parser("stop", parents=[_mutating()], help="stop a queued or running restore")
    stop.add_argument("restore", help="restore id or task name (e.g. nightly#3->scratch)")
    stop.set_defaults(func=_verb(cmd_restore_stop))


def _add_earlier_spellings(sub: Any) -> None:
    """The verbs as earlier releases spelled them, so scripts keep working; left out of
    --help (and `restore SNAPSHOT --target T` is read as `restore create`, in main)."""
    for name, statuses, func in (
        ("backups", BACKUP_STATUSES, cmd_backups),
        ("restores", RESTORE_STATUSES, cmd_restores),
    ):
        p = sub.add_parser(name, parents=[_reading()])
        _list_options(p, statuses)
        p.set_defaults(func=_verb(func))
    stop = sub.add_parser("stop-restore", parents=[_mutating()])
    stop.add_argument("restore", help="restore id or task name")
    stop.set_defaults(func=_verb(cmd_restore_stop), action="stop")
    verify = sub.add_parser("verify", parents=[_reading()])
    verify.add_argument("snapshot", help=SNAPSHOT_REF)
    verify.set_defaults(func=_verb(cmd_snapshot_verify))


def _add_runs(sub: Any) -> None:
    _add_snapshot(sub)
    _add_restore(sub)
    _add_earlier_spellings(sub)
