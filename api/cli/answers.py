"""What a mutating verb prints: a line for people, or with -o json the API's answer for
the same command plus the record it touched, as `list` and `show` print it."""

from __future__ import annotations

import argparse
from uuid import UUID

from api.cli.common import _mutated, _print_json
from api.cli.display import wait_for_run
from api.records import Records
from api.runtime import Runtime
from domain.ledger import Outcome

RECORDS = {"snapshot": "backups", "restore": "restores", "policy": "policies"}


def answer(
    args: argparse.Namespace,
    runtime: Runtime,
    outcome: Outcome,
    text: str,
    record: tuple[str, UUID | str],
    wait: bool = False,
) -> int:
    """Prints `text` (table output) or the JSON answer; with `wait`, follows the run
    (`record`'s snapshot or restore) to its end first, and exits as `--wait` does."""
    _mutated(runtime)
    kind, record_id = record
    if not args.json:
        print(text)
    code = wait_for_run(runtime, kind, record_id, quiet=args.json) if wait else 0
    if args.json:
        runtime.runner.catch_up()
        body = outcome.as_dict()
        body["record"] = Records(runtime.views).one(RECORDS[kind], str(record_id))
        _print_json(body)
    return code
