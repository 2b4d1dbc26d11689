"""What every verb shares: opening the runtime, mapping failures to exit codes, resolving
policy and snapshot names, mutations under a request key retried while the database is away."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import getpass
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

from api.availability import UNAVAILABLE
from api.config import load_config
from api.logs import setup_logging
from api.records import Records
from api.runtime import Runtime
from domain.errors import DomainError, NotFound
from domain.idempotency import RequestKey
from domain.ledger import Outcome
from domain.values import is_digits
from projections import queries
from transfer.storage import StorageError

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], str], bool]  # header, cell, right-aligned
FOLLOW_SECONDS = 0.5  # how often --follow asks for new events


MAX_PAGE = 500
OUTPUTS = ("table", "json")


Verb = Callable[[argparse.Namespace, Runtime], int]


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
    config = load_config(args.config)
    setup_logging(secrets=config.secrets)  # configured passwords never reach a log line
    runtime = Runtime.build(config)
    try:
        runtime.runner.catch_up()
        yield runtime
    finally:
        runtime.close()


def _verb(fn: Verb) -> Callable[[argparse.Namespace], int]:
    """Maps what can go wrong to exit codes once, instead of in every verb."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        args.json = getattr(args, "output", "table") == "json"
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
    policy_id = queries.live_policy_named(runtime.views, ref)
    if policy_id is None:
        raise NotFound(f"policy {ref!r} not found: no policy has that id, nor a live one that name", "policy")
    return policy_id


def _by_id_or_task_name(ref: str, lookup: Callable[[str], str | None], what: str) -> str:
    if _parse_uuid(ref) is not None:
        return ref
    found = lookup(ref)
    if found is None:
        raise NotFound(f"{what} {ref!r} not found: no {what} has that id or task name", what)
    return found


def resolve_snapshot(runtime: Runtime, ref: str) -> str:
    """A snapshot id, or its task name as the tables show it (e.g. nightly#3)."""
    return _by_id_or_task_name(ref, lambda n: queries.snapshot_by_task_name(runtime.views, n), "snapshot")


def resolve_restore(runtime: Runtime, ref: str) -> str:
    """A restore id, or its task name as Restore Records show it (e.g. nightly#3->scratch)."""
    return _by_id_or_task_name(ref, lambda n: queries.restore_by_task_name(runtime.views, n), "restore")


def _mutated(runtime: Runtime) -> None:
    """The views (and so every worker's task queue) see the change before we answer."""
    runtime.runner.catch_up()


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


def _common() -> argparse.ArgumentParser:
    """--config also after the verb (`snapledger policy list --config x.toml`), and one
    output switch on every verb."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file")
    output_option(p)
    return p


def output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="table",
        help="table (default) or json: one JSON document, as the API answers",
    )
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")


def _mutating() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, parents=[_common()])
    p.add_argument(
        "--actor", default=default_actor(), help="who asks, recorded on every event (default: cli:<OS user>)"
    )
    return p


def _reading() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False, parents=[_common()])


def _waiting() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the run ends (exit 1 if it fails or is stopped; Ctrl-C stops waiting)",
    )
    return p


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not is_digits(value) or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {value!r}")
        return int(value)

    return parse
