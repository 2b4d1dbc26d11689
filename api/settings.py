"""The configuration file's shape, as a typed model: every table rejects keys it does not
know (naming the nearest one it does), and every number is range-checked, before anything
is built from it.

A typo used to be silently accepted: a misspelled `encryption_key_env` wrote plaintext
archives, `[[api.token]]` left the API open. pydantic checks the shape; api/config/ then
resolves what the shape cannot say (environment variables, URLs, keys).
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(ge=0.05, le=86400)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DatabaseSpec(_Table):
    url: str | None = None
    password_env: str | None = None
    encryption_key_env: str | None = None


# Which keys each kind of source or target takes, besides `kind`.
SOURCE_KEYS = {
    "ndjson": {"path", "parallel"},
    "postgresql": {"url", "password_env", "schemas", "parallel"},
    "mongodb": {"url", "password_env", "databases", "parallel", "read_preference", "users_and_roles"},
}
TARGET_KEYS = {
    "ndjson": {"path", "existing"},
    "postgresql": {"url", "password_env", "existing", "parallel", "keep_owners"},
    "mongodb": {"url", "password_env", "existing", "insertion_workers", "users_and_roles"},
}


class _EndpointSpec(_Table):
    kind: Literal["ndjson", "postgresql", "mongodb"] = "ndjson"
    path: str | None = None
    url: str | None = None
    password_env: str | None = None
    parallel: Annotated[int, Field(ge=1, le=64)] | None = None
    users_and_roles: bool | None = None  # MongoDB: a database's users and roles, both ways

    allowed: ClassVar[dict[str, set[str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _keys_of_the_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("kind", "ndjson")
            allowed = cls.allowed.get(kind) if isinstance(kind, str) else None
            if allowed is not None:
                for key in data:
                    if key != "kind" and key in cls.model_fields and key not in allowed:
                        raise ValueError(f"{key} is not a setting of a {kind} {cls._what()}")
        return data

    @classmethod
    def _what(cls) -> str:
        return "source" if cls is SourceSpec else "target"


ReadPreferenceName = Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"]


class SourceSpec(_EndpointSpec):
    schemas: list[str] | None = None
    databases: list[str] | None = None
    read_preference: (
        Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"] | None
    ) = None
    allowed: ClassVar[dict[str, set[str]]] = SOURCE_KEYS


class TargetSpec(_EndpointSpec):
    existing: str | None = None
    keep_owners: bool | None = None
    insertion_workers: Annotated[int, Field(ge=1, le=16)] | None = None
    allowed: ClassVar[dict[str, set[str]]] = TARGET_KEYS


class StorageSpec(_Table):
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    part_size_mb: Annotated[int, Field(ge=5, le=5120)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=32)] | None = None
    path_style: bool | None = None
    encryption_key_id: str | None = None
    encryption_key_env: str | None = None
    decryption_keys_env: dict[str, str] | None = None
    signing_key_env: str | None = None
    object_lock: Literal["compliance", "governance"] | None = None
    object_lock_days: Annotated[int, Field(ge=1, le=36500)] | None = None
    sync_interval_seconds: Annotated[float, Field(ge=10, le=7 * 86400)] | None = None


class ArchiveSpec(_Table):
    compression: Literal["gzip", "zstd"] | None = None
    level: Annotated[int, Field(ge=1, le=19)] | None = None


class WorkerSpec(_Table):
    enabled: bool | None = None
    lease_seconds: Annotated[int, Field(ge=2, le=3600)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=64)] | None = None
    scheduler: bool | None = None
    scheduler_interval: Seconds | None = None
    retention_interval: Seconds | None = None
    health_interval: Seconds | None = None


class TokenSpec(_Table):
    name: str
    role: Literal["viewer", "operator"]
    token_env: str


class ApiSpec(_Table):
    host: str | None = None
    port: Port | None = None
    presign_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] | None = None
    wait_seconds: Annotated[float, Field(ge=0, le=300)] | None = None
    shutdown_seconds: Annotated[float, Field(ge=1, le=300)] | None = None
    tokens: list[TokenSpec] | None = None


class FileSpec(_Table):
    data_dir: str | None = None
    database: DatabaseSpec | None = None
    sources: dict[str, SourceSpec] | None = None
    targets: dict[str, TargetSpec] | None = None
    storages: dict[str, StorageSpec] | None = None
    archive: ArchiveSpec | None = None
    worker: WorkerSpec | None = None
    api: ApiSpec | None = None


INLINE_SECRETS = ("encryption_key", "decryption_keys", "signing_key", "password", "token")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The table a location points into, to suggest its nearest key."""
    model: Any = FileSpec
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        model = _inner(field.annotation)
        if get_origin(model) is dict:
            model = _inner(get_args(model)[1])
            continue
        if get_origin(model) is list:
            model = _inner(get_args(model)[0])
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not None and args and get_origin(annotation) not in (dict, list, Annotated):
        return _inner(args[0]) if len(args) == 1 else annotation
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "constrained-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: ErrorDetails) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in ("str", "int", "float", "bool")))
    where = _path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        known = sorted(model.model_fields) if model is not None else []
        if key in INLINE_SECRETS and f"{key}_env" in known:
            return f"{where}: put keys in environment variables and name them in {key}_env"
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else (f" (known: {', '.join(known)})" if known else "")
        return f"{where} is not a setting{hint}"
    if kind in ("greater_than_equal", "less_than_equal"):
        ctx = error.get("ctx", {})
        low, high = _bounds(loc)
        if low is not None and high is not None:
            return f"{where} must be from {low} to {high} (got {error.get('input')!r})"
        bound = ctx.get("ge", ctx.get("le"))
        return f"{where} must be {'at least' if kind.startswith('greater') else 'at most'} {bound}"
    if kind == "literal_error":
        return f"{where} must be one of {error.get('ctx', {}).get('expected', '')}"
    if kind in ("int_type", "float_type", "bool_type", "string_type", "dict_type", "list_type", "model_type"):
        wanted = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
                  "string_type": "text", "dict_type": "a table", "list_type": "an array",
                  "model_type": "a table"}[kind]  # fmt: skip
        return f"{where} must be {wanted} (got {error.get('input')!r})"
    if kind == "missing":
        return f"{where} is required"
    text = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{where}: {text}" if where else text


def _bounds(loc: tuple[Any, ...]) -> tuple[Any, Any]:
    model = _model_at(loc[:-1])
    if model is None:
        return None, None
    field = model.model_fields.get(str(loc[-1]))
    if field is None:
        return None, None
    low = high = None
    pending = _metadata(field.annotation) + list(field.metadata)
    while pending:
        meta = pending.pop()
        pending.extend(getattr(meta, "metadata", []) or [])
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
    return low, high


def _metadata(annotation: Any) -> list[Any]:
    found: list[Any] = []
    for arg in get_args(annotation):
        if get_origin(arg) is Annotated:
            found.extend(get_args(arg)[1:])
    if get_origin(annotation) is Annotated:
        found.extend(get_args(annotation)[1:])
    return found


def check_shape(raw: dict[str, Any]) -> None:
    """Raises ValueError with one line per problem (at most five), naming each setting."""
    try:
        FileSpec.model_validate(raw)
    except ValidationError as e:
        lines = [_message(err) for err in e.errors()]
        raise ValueError("; ".join(dict.fromkeys(lines[:5]))) from None
