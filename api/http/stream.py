"""Live updates: record changes over Server-Sent Events, resumable by position."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import params
from api.http.common import call, rt
from api.records import backup_row, policy_row, restore_row
from api.runtime import Runtime
from domain.errors import InvalidValue

STREAM_TABLES = (("policy", "policies", policy_row), ("backup", "backup_records", backup_row),
                 ("restore", "restore_records", restore_row))  # fmt: skip


STREAM_BATCH = 500


def _changes(runtime: Runtime, after: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Changed rows after a position, in position order. When a table has more than a
    batch, nothing past its last delivered row is sent yet, so no change is skipped."""
    out = []
    bound = None
    for kind, table, shape in STREAM_TABLES:
        rows = runtime.views.query(
            f"SELECT * FROM {table} WHERE position > %(after)s ORDER BY position LIMIT {STREAM_BATCH}",
            {"after": after},
        )
        if len(rows) == STREAM_BATCH:
            last = int(rows[-1]["position"])
            bound = last if bound is None else min(bound, last)
        out += [(int(r["position"]), kind, shape(r)) for r in rows]
    return sorted((c for c in out if bound is None or c[0] <= bound), key=lambda c: c[0])


def _running(runtime: Runtime) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for kind, table, shape in STREAM_TABLES[1:]:
        rows = runtime.views.query(f"SELECT * FROM {table} WHERE status = 'running'")
        out += [(int(r["position"]), kind, shape(r)) for r in rows]
    return out


async def stream(request: Request) -> Response:
    """Record changes as they are projected; the SSE id is the position, so a client
    resumes with Last-Event-ID. Running records are repeated every second, so progress
    arrives at least once a second even between progress events."""
    runtime = rt(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    resume = str(params.position(resume, "after"))  # Last-Event-ID, or after
    raw_timeout = request.query_params.get("timeout")
    try:
        timeout = float(raw_timeout) if raw_timeout is not None else None
    except ValueError:
        raise InvalidValue("timeout must be a number of seconds", "timeout") from None

    async def events() -> AsyncIterator[bytes]:
        position = int(resume)
        started = loop_time = time.monotonic()
        yield b"retry: 1000\n\n"
        while timeout is None or time.monotonic() - started < timeout:
            if await request.is_disconnected():
                return
            if runtime.stopping.is_set():  # SIGTERM: end the stream, saying why, so shutdown goes on
                yield b'event: bye\ndata: {"reason": "server stopped"}\n\n'
                return
            for pos, kind, row in await call(_changes, runtime, position):
                position = max(position, pos)
                yield _sse(pos, kind, row)
            if time.monotonic() - loop_time >= 1.0:
                loop_time = time.monotonic()
                for _, kind, row in await call(_running, runtime):
                    yield _sse(position, kind, row)
                yield b": keep-alive\n\n"
            await anyio.sleep(0.2)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _sse(position: int, kind: str, row: dict[str, Any]) -> bytes:
    return f"id: {position}\nevent: {kind}\ndata: {json.dumps(row)}\n\n".encode()
