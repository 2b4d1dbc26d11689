"""Parsing of request input: every bad value becomes a 4xx naming its field."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

from starlette.requests import Request

from domain.errors import DomainError, InvalidValue
from domain.idempotency import RequestKey, check_key
from domain.values import has_surrogates, is_digits

MAX_LIMIT = 500
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")  # any case


class BadRequest(DomainError):
    """Malformed HTTP input (400)."""


async def json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        raise BadRequest("request body must be a JSON object", "body")
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest("request body nests too deeply", "body") from None
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8", "body") from None
    except ValueError as e:
        msg = f"{e.msg} at position {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise BadRequest(f"request body is not valid JSON: {msg}", "body") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", "body")
    bad = _surrogate_at(data, "")
    if bad is not None:
        raise InvalidValue(
            f"{bad or 'body'} holds a lone surrogate (e.g. \\udcff): it is not text any store can keep",
            bad or "body",
        )
    return data


def _surrogate_at(value: Any, path: str) -> str | None:
    """The dotted path of the first string (or key) that is not valid Unicode text."""
    if isinstance(value, str):
        return path if has_surrogates(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if has_surrogates(str(key)):
                return where
            found = _surrogate_at(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for item in value:
            found = _surrogate_at(item, path)
            if found is not None:
                return found
    return None


def limit(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not is_digits(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidValue(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
    return int(raw)


MAX_POSITION = 2**63 - 1  # the event store's BIGINT


def position(raw: str, name: str) -> int:
    if not is_digits(raw) or int(raw) > MAX_POSITION:
        raise InvalidValue(f"{name} must be a position: an integer from 0 to {MAX_POSITION}", name)
    return int(raw)


def non_negative(request: Request, name: str) -> int:
    return position(request.query_params.get(name, "0"), name)


def uuid_param(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        raise InvalidValue(f"{name} must be a UUID", name) from None


def timestamp(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidValue(f"{name} must be an ISO-8601 time such as 2026-11-25T03:00:00Z", name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def time_range(request: Request, low: str = "created_after", high: str = "created_before") -> dict[str, str]:
    """As stored in the views: ISO-8601 UTC with microseconds, so text order is time order."""
    out = {}
    for name in (low, high):
        value = timestamp(request, name)
        if value is not None:
            out[name] = value.astimezone(UTC).isoformat(timespec="microseconds")
    return out


def choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise InvalidValue(f"{name} must be one of {', '.join(allowed)}", name)
    return value


def boolean(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise InvalidValue(f"{name} must be true or false", name)


def encode_cursor(created_at: str, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, row_id]).encode()).decode()


# base64url, padded or not: the cursors this API hands out, and what the OpenAPI document allows
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==)?|[A-Za-z0-9_-]{3}=?)?$"
_CURSOR = re.compile(CURSOR_PATTERN)


def decode_cursor(request: Request) -> tuple[str, str] | None:
    """A cursor is a position in the lists' order (created_at, id). Any well-formed one
    names a position: one this API returned resumes after its row; any other is read as
    a created_at bound, so no well-formed cursor is refused."""
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    if not _CURSOR.search(raw):  # as JSON Schema reads the pattern: '$' allows one last newline
        raise InvalidValue("cursor is not one this API returned (base64url)", "cursor")
    text = raw.rstrip("\n").rstrip("=")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    try:
        created_at, row_id = json.loads(data)
        if isinstance(created_at, str) and isinstance(row_id, str) and "\x00" not in created_at + row_id:
            return created_at, row_id
    except (ValueError, TypeError, RecursionError):
        pass
    return data.decode("utf-8", "replace").replace("\x00", ""), ""


def actor(request: Request) -> str:
    """Who asked: the bearer token's name; without configured tokens (loopback only) the
    caller may name itself in X-Snapledger-Actor."""
    token_name: str | None = getattr(request.state, "actor", None)
    if token_name:
        return token_name
    value = request.headers.get("x-snapledger-actor", "api").strip()
    if not value or len(value) > 200 or not value.isprintable():
        raise InvalidValue("X-Snapledger-Actor must be 1-200 printable characters", "X-Snapledger-Actor")
    return value


async def request_key(request: Request) -> RequestKey:
    """The mutation's Idempotency-Key, bound to who sent it and to this exact request;
    without the header the server chooses one and answers it, so a client told 503 can
    still retry under it."""
    given = request.headers.get("idempotency-key")
    key = check_key(given) if given is not None else str(uuid4())
    body = await request.body()
    try:  # the same JSON in another spelling is the same request
        canonical = (
            json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
        )
    except (ValueError, RecursionError):
        canonical = body
    query = urlencode(sorted(request.query_params.multi_items())).encode()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    command = f"{request.method} {request.url.path}"
    return RequestKey(key, actor(request), digest.hexdigest(), command, given=given is not None)
