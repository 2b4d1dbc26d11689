"""`snapledger` command line: the parser of every noun and verb, and serve, worker,
projections rebuild."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

import argcomplete

from api.cli import storage
from api.cli.common import output_option
from api.cli.events import _add_events
from api.cli.policies import _add_policy
from api.cli.runs import _add_runs
from api.config import ConfigError, load_config
from api.logs import setup_logging
from api.runtime import Runtime
from domain.values import is_digits


def _fail(message: str) -> int:
    print(f"snapledger: error: {message}", file=sys.stderr)
    return 2


def _runtime(args: argparse.Namespace) -> Runtime:
    config = load_config(args.config)
    setup_logging(secrets=config.secrets)  # configured passwords never reach a log line
    return Runtime.build(config)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.http import create_app

    config = load_config(args.config)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    if not config.tokens and host not in ("127.0.0.1", "::1", "localhost"):
        return _fail(
            f"refusing to serve on {host} without API tokens: configure [[api.tokens]] "
            "(name, role, token_env) or bind 127.0.0.1"
        )
    setup_logging(secrets=config.secrets)
    runtime = Runtime.build(config)
    app = create_app(runtime, worker=not args.no_worker and config.worker)
    print(f"snapledger API on http://{host}:{port}/api/v1 (events: {config.database.kind})", flush=True)

    class Server(uvicorn.Server):
        """On SIGTERM the streams end (with a last event saying so) instead of holding
        shutdown open until every browser leaves; anything still open after
        api.shutdown_seconds is cut."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            runtime.stopping.set()
            super().handle_exit(sig, frame)

    # uvicorn annotates timeout_graceful_shutdown as int, yet only hands it to asyncio.wait_for
    # as its timeout, where seconds with a fraction work as they always did here
    server_config = uvicorn.Config(
        app, host=host, port=port, log_level="info", log_config=None,  # our JSON/text handler
        timeout_graceful_shutdown=config.shutdown_seconds,  # type: ignore[arg-type]  # see above
    )  # fmt: skip
    Server(server_config).run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    runtime = _runtime(args).start(worker=True, standby_views=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"snapledger worker {runtime.worker.worker_id} running", flush=True)  # type: ignore[union-attr]
    done.wait()
    runtime.close()
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from api.rebuild import RebuildFailed, rebuild_views
    from projections.views import ALL_VIEWS

    names = [args.name] if args.name else list(ALL_VIEWS)
    unknown = [n for n in names if n not in ALL_VIEWS]
    if unknown:
        return _fail(f"unknown view {unknown[0]!r} (views: {', '.join(ALL_VIEWS)})")
    runtime = _runtime(args)
    try:
        counts = rebuild_views(runtime, names, args.jobs)
    except RebuildFailed as e:
        print(f"snapledger: error: {e}", file=sys.stderr)
        return 1
    finally:
        runtime.views.close()
        runtime.app.close()
    if args.output == "json":
        print(json.dumps({"rebuilt": counts}, indent=2))
        return 0
    for name, n in counts.items():
        print(f"rebuilt {name}: replayed {n} events")
    return 0


def _port(value: str) -> int:
    if not is_digits(value) or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value!r}")
    return int(value)


def _jobs(value: str) -> int:
    if not is_digits(value) or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"jobs must be 1-64, got {value!r}")
    return int(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snapledger", description="Event-sourced backup control plane")
    p.add_argument("--config", help="TOML configuration file (default: $SNAPLEDGER_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the JSON API (and an in-process worker)")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (default 8000)")
    serve.add_argument("--no-worker", action="store_true", help="API only; run `snapledger worker` apart")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run snapshots and restores without the API")
    worker.set_defaults(func=cmd_worker)
    proj = sub.add_parser("projections", help="manage the record views")
    proj_sub = proj.add_subparsers(dest="action", required=True)
    rb = proj_sub.add_parser("rebuild", help="drop and replay a view (all if NAME is omitted)")
    rb.add_argument("name", nargs="?", help="policies, backups, restores or tasks")
    rb.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="processes replaying views side by side (default: one per core from 200,000 events)",
    )
    output_option(rb)
    rb.set_defaults(func=cmd_rebuild)
    # The operator verbs, one module per noun.
    _add_policy(sub)
    _add_runs(sub)
    _add_events(sub)
    storage.register(sub)
    return p


RESTORE_VERBS = ("list", "create", "stop")


def earlier_spelling(argv: list[str]) -> list[str]:
    """`restore SNAPSHOT --target T`, as earlier releases took it, is `restore create`."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # options before the command
        i += 2 if argv[i] == "--config" else 1
    rest = argv[i + 1 :]
    if argv[i : i + 1] == ["restore"] and rest and rest[0] not in (*RESTORE_VERBS, "-h", "--help"):
        return [*argv[: i + 1], "create", *rest]
    return argv


def main(argv: list[str] | None = None) -> int:
    setup_logging(level=logging.INFO)
    p = parser()
    argcomplete.autocomplete(p)
    args = p.parse_args(earlier_spelling(sys.argv[1:] if argv is None else list(argv)))
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
