"""Process logging: JSON lines for log collectors, the usual text for people at a terminal.

Secrets never reach a log line: every record passes a filter that replaces configured
secret values in the message, its arguments, extra fields and the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

from domain.secrets import REDACTED, redact, spellings

__all__ = ["REDACTED", "redact", "setup_logging", "bind"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_PLAIN = (str, int, float, bool, type(None))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class RedactSecrets(logging.Filter):
    """Rewrites the record in place (before any formatter sees it); never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]
        self.forms = sorted({f for s in self.secrets for f in spellings(s)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string still gets logged, with its raw parts
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message, self.secrets), None
        for key, value in extra_fields(record).items():
            text = value if isinstance(value, str) else None
            if text is None and not isinstance(value, _PLAIN):
                text = json.dumps(value, default=str)
            if text is not None and any(f in text for f in self.forms):
                setattr(record, key, redact(text, self.secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class RefusedRequestQueries(logging.Filter):
    """uvicorn's access line of a refused request (4xx/5xx) keeps its path, not its query:
    a client that put a token in `?access_token=` was refused, and the line must not keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            if isinstance(status, int) and status >= 400 and isinstance(path, str) and "?" in path:
                record.args = (client, method, path.split("?", 1)[0] + "?[query dropped]", version, status)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["error"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The familiar one-line format, with extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        fields = extra_fields(record)
        if fields:
            line += " [" + " ".join(f"{k}={v}" for k, v in sorted(fields.items())) + "]"
        return line


class ContextAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Binds fields (task_name, snapshot_id, ...) to every line; call-site `extra=` adds to
    them instead of replacing them, as the stock LoggerAdapter of Python 3.11 would."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bind(logger: logging.Logger | str, **fields: Any) -> ContextAdapter:
    """`bind("snapledger.worker", snapshot_id=..., task_name=...)`: a logger for one run."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return ContextAdapter(base, fields)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second setup replaces it."""


def setup_logging(
    level: int | str = logging.INFO,
    secrets: Iterable[str] | None = None,
    stream: IO[str] | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Installs one root handler (replacing the one an earlier call installed): JSON lines
    when the stream is not a terminal (or `json_lines=True`), text otherwise. Call again
    with `secrets=config.secrets` once configuration is loaded."""
    stream = stream if stream is not None else sys.stderr
    if json_lines is None:
        isatty = getattr(stream, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RefusedRequestQueries())
    handler.addFilter(RedactSecrets(secrets or ()))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
