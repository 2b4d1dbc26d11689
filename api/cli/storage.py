"""`snapledger storage ...` (what a location holds, catalog resync) and `snapledger retention run`."""

from __future__ import annotations

import argparse
from typing import Any

from api.cli.common import _mutating, _print_json, _reading, _verb
from api.cli.tables import human_size, print_plan
from api.runtime import Runtime


def cmd_storage_sync(args: argparse.Namespace, runtime: Runtime) -> int:
    """Exit 0 when every manifest was readable; 1 when some archive is damaged or unknown."""
    report = runtime.sync_storage(args.location, args.actor, args.dry_run)
    if args.json:
        _print_json(report.as_dict())
    else:
        verb = "would import" if report.dry_run else "imported"
        for entry in report.imported:
            print(f"{verb}  {entry['archive_key']}  (policy {entry['policy']})")
        for key in report.incomplete:
            print(f"incomplete  {key}: no manifest, so never imported")
        for entry in report.invalid:
            print(f"invalid  {entry['key']}: {entry['reason']}")
        for entry in report.changed:
            print(
                f"changed  {entry['key']}: manifest differs from the one imported as {entry['snapshot_id']}"
            )
        print(
            f"{report.storage}: {len(report.imported)} {verb}, {report.known} already known, "
            f"{len(report.incomplete)} incomplete, {len(report.invalid)} invalid"
        )
    return 1 if report.invalid or report.changed else 0


def cmd_storage_list(args: argparse.Namespace, runtime: Runtime) -> int:
    rows: list[dict[str, Any]] = []
    for name, storage in sorted(runtime.resources.storages.items()):
        objects = list(storage.list_objects())
        rows.append(
            {"name": name, "where": storage.describe(), "objects": len(objects),
             "bytes": sum(o.size for o in objects)}
        )  # fmt: skip
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:<16} {r['objects']:>6} objects {human_size(r['bytes']):>10}  {r['where']}")
    return 0


def cmd_retention_run(args: argparse.Namespace, runtime: Runtime) -> int:
    return print_plan(runtime.retention_pass(dry_run=args.dry_run).extra, args.json)


def register(sub: Any) -> None:
    retention = sub.add_parser("retention", help="apply the policies' retention rules now")
    retention_verbs = retention.add_subparsers(dest="action", required=True)
    run = retention_verbs.add_parser("run", parents=[_mutating()], help="one retention pass")
    run.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    run.set_defaults(func=_verb(cmd_retention_run))

    storage = sub.add_parser("storage", help="storage locations: list them, resync the catalog from one")
    verbs = storage.add_subparsers(dest="action", required=True)
    sync = verbs.add_parser(
        "sync", parents=[_mutating()], help="import archives the event store does not know (by manifest)"
    )
    sync.add_argument("location", help="configured storage location name")
    sync.add_argument("--dry-run", action="store_true", help="report what would be imported; record nothing")
    sync.set_defaults(func=_verb(cmd_storage_sync))
    listing = verbs.add_parser("list", parents=[_reading()], help="configured locations and what they hold")
    listing.set_defaults(func=_verb(cmd_storage_list))
