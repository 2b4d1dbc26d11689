"""Value objects of a policy: schedule, retention and collection selection.

They validate operator input once, at the edge of the domain, and serialise to plain
dicts so events stay readable JSON forever.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

from domain.errors import InvalidValue

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59)]
_CRON_FIELD_NAMES = ["minute", "hour", "day of month", "month", "day of week", "second"]
MAX_DURATION_SECONDS = 100 * 366 * 86400
MAX_KEEP_LAST = 1_000_000
_CRON_MACROS = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}


def is_digits(text: str) -> bool:
    """ASCII digits only: '²'.isdigit() is true and int('²') raises; input that says it is
    a number must be one int() reads."""
    return text.isascii() and text.isdigit()


def has_surrogates(text: str) -> bool:
    """A lone surrogate (from a non-UTF-8 file name, or JSON's "\\udcff") cannot be encoded
    as UTF-8: it must never reach an event, which would then fail to store."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def check_name(value: object, field: str = "name") -> str:
    """Names become file-name parts and URL segments, so they are kept to a safe alphabet."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidValue(
            f"{field} must be 1-63 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field,
        )
    return value


DURATION_HINT = "a number with a unit: s, m, h, d or w (e.g. '30d', '12h', '90m', '2w')"


def parse_duration(value: object, field: str) -> int:
    """Returns seconds from '30d', '12h', '90m', '2w' or '45s'. A bare number is refused:
    an operator who typed 30 meaning days once had a snapshot deleted 30 seconds later."""
    if isinstance(value, bool) or not isinstance(value, str):
        bare = isinstance(value, int | float) and not isinstance(value, bool)
        why = f"{value} has no unit; " if bare else ""
        raise InvalidValue(f"{field} must be {why}{DURATION_HINT}", field)
    m = _DURATION.match(value)
    if m is None:
        why = f"{value.strip()!r} has no unit; " if is_digits(value.strip()) else ""
        raise InvalidValue(f"{field} must be {why}{DURATION_HINT}", field)
    seconds = int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise InvalidValue(f"{field} must be positive", field)
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidValue(f"{field} must be at most 100 years", field)
    return seconds


def check_cron(value: object, field: str = "schedule") -> str | None:
    """Validates five-field cron text (or an @macro, or six fields with seconds last, as
    croniter reads them); the scheduler interprets it later."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{field} must be cron text such as '0 3 * * *'", field)
    text = " ".join(value.split())
    if text in _CRON_MACROS:
        return text
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise InvalidValue(
            f"{field} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"or a 6th for seconds; got {len(parts)}",
            field,
        )
    for part, (low, high), name in zip(parts, _CRON_RANGES, _CRON_FIELD_NAMES, strict=False):
        for item in part.split(","):
            base, _, step = item.partition("/")
            if step and (not is_digits(step) or int(step) == 0):
                raise InvalidValue(f"{field}: bad step {step!r} in {name} field", field)
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2 or not all(is_digits(b) for b in bounds):
                raise InvalidValue(f"{field}: bad {name} field {part!r}", field)
            numbers = [int(b) for b in bounds]
            if any(n < low or n > high for n in numbers) or numbers != sorted(numbers):
                raise InvalidValue(f"{field}: {name} field {part!r} is outside {low}-{high}", field)
    if not croniter.is_valid(text):
        raise InvalidValue(f"{field}: {text!r} is not a valid cron expression", field)
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except ValueError:
        raise InvalidValue(f"{field}: {text!r} never fires (no such date)", field) from None
    return text


def check_timezone(value: object, field: str = "timezone") -> str:
    """Schedules fire in an explicit zone; UTC unless the operator names another."""
    if value is None:
        return "UTC"
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{field} must be an IANA time zone name such as 'Europe/Lisbon'", field)
    if value not in _zones():  # ZoneInfo also opens files that are not zones ('posixrules')
        raise InvalidValue(f"{field}: unknown time zone {value!r}", field)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValue(f"{field}: unknown time zone {value!r}", field) from None
    return value


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


@dataclass(frozen=True)
class Retention:
    """How many completed snapshots to keep and/or how long each lives."""

    keep_last: int | None = None
    expire_after_seconds: int | None = None

    @classmethod
    def parse(cls, value: object, field: str = "retention") -> Retention:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidValue(f"{field} must be an object with keep_last and/or expire_after", field)
        unknown = set(value) - {"keep_last", "expire_after"}
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidValue(f"{field}.{name} is not a retention setting", f"{field}.{name}")
        keep_last = value.get("keep_last")
        if isinstance(keep_last, float) and keep_last.is_integer():  # JSON's 7.0 is the integer 7
            keep_last = int(keep_last)
        if keep_last is not None and (
            isinstance(keep_last, bool)
            or not isinstance(keep_last, int)
            or not 1 <= keep_last <= MAX_KEEP_LAST
        ):
            raise InvalidValue(
                f"{field}.keep_last must be an integer from 1 to {MAX_KEEP_LAST}", f"{field}.keep_last"
            )
        expire = value.get("expire_after")
        seconds = None if expire is None else parse_duration(expire, f"{field}.expire_after")
        return cls(keep_last=keep_last, expire_after_seconds=seconds)

    def to_dict(self) -> dict[str, int | None]:
        return {"keep_last": self.keep_last, "expire_after_seconds": self.expire_after_seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Retention:
        data = data or {}
        return cls(data.get("keep_last"), data.get("expire_after_seconds"))

    @property
    def expire_after(self) -> timedelta | None:
        if self.expire_after_seconds is None:
            return None
        return timedelta(seconds=self.expire_after_seconds)


def name_matches(pattern: str, name: str) -> bool:
    """A collection name against a selection entry: the name itself, or a pattern where `*`
    stands for any run of characters (`shop.*`, `*.audit_*`), as mongodump's nsInclude
    takes them; `\\*` is a literal star."""
    if "*" not in pattern:
        return pattern == name
    parts = re.split(r"(?<!\\)\*", pattern)
    regex = ".*".join(re.escape(part.replace("\\*", "*")) for part in parts)
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


def expand(patterns: Iterable[str], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The names the entries select, in the names' order, and the entries that select
    nothing (a typo, or a collection the snapshot or source lacks)."""
    names, patterns = list(names), list(patterns)
    chosen = [n for n in names if any(name_matches(p, n) for p in patterns)]
    unmatched = [p for p in patterns if not any(name_matches(p, n) for n in names)]
    return chosen, unmatched


@dataclass(frozen=True)
class CollectionSelection:
    """Which collections a policy or restore moves; empty include means all. Entries are
    names or `*` patterns."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: object, field: str = "collections") -> CollectionSelection:
        if value is None:
            return cls()
        if isinstance(value, list):
            value = {"include": value}
        if not isinstance(value, dict):
            raise InvalidValue(f"{field} must be a list of names or an object with include/exclude", field)
        unknown = set(value) - {"include", "exclude"}
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidValue(f"{field}.{name} is not include or exclude", f"{field}.{name}")
        lists = {}
        for key in ("include", "exclude"):
            items = value.get(key) or []
            if not isinstance(items, list) or not all(
                isinstance(i, str) and i.strip() and "/" not in i and i not in (".", "..") for i in items
            ):
                raise InvalidValue(f"{field}.{key} must be a list of collection names", f"{field}.{key}")
            lists[key] = tuple(dict.fromkeys(items))
        return cls(include=lists["include"], exclude=lists["exclude"])

    def to_dict(self) -> dict[str, list[str]]:
        return {"include": list(self.include), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CollectionSelection:
        data = data or {}
        return cls(tuple(data.get("include") or ()), tuple(data.get("exclude") or ()))

    def selects(self, name: str) -> bool:
        if self.include and name not in self.include:
            return False
        return name not in self.exclude


MIB = 1024 * 1024


@dataclass(frozen=True)
class Continuous:
    """A policy's continuous capture: after each snapshot, the source's changes from its
    exact consistent point, archived in segments, so a restore can reach any second."""

    segment_seconds: int = 60
    segment_bytes: int = 16 * MIB
    max_slot_wal_mb: int = 1024

    @classmethod
    def parse(cls, value: object, field: str = "continuous") -> Continuous | None:
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise InvalidValue(f"{field} must be true, false or an object of capture settings", field)
        unknown = sorted(set(value) - {"segment_seconds", "segment_bytes", "max_slot_wal_mb"})
        if unknown:
            raise InvalidValue(f"{field}.{unknown[0]} is not a capture setting", f"{field}.{unknown[0]}")
        seconds = parse_duration(value.get("segment_seconds", "60s"), f"{field}.segment_seconds")
        size = _integer(value.get("segment_bytes", 16 * MIB), f"{field}.segment_bytes", 64 * 1024, 1024 * MIB)
        wal = _integer(value.get("max_slot_wal_mb", 1024), f"{field}.max_slot_wal_mb", 16, 1024 * 1024)
        return cls(seconds, size, wal)

    def to_dict(self) -> dict[str, int]:
        return {
            "segment_seconds": self.segment_seconds,
            "segment_bytes": self.segment_bytes,
            "max_slot_wal_mb": self.max_slot_wal_mb,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Continuous | None:
        return None if data is None else cls(**data)


MAX_CHECKS = 20
MAX_CHECK_LENGTH = 4000


def check_checks(value: object, field: str = "checks") -> list[str]:
    """A drill's checks: SQL (PostgreSQL) each answering one truthy value on the restored
    copy. Bounded, so a policy cannot carry a script."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise InvalidValue(f"{field} must be a list of non-empty SQL queries", field)
    if len(value) > MAX_CHECKS:
        raise InvalidValue(f"{field} takes at most {MAX_CHECKS} queries", field)
    for index, check in enumerate(value):
        if len(check) > MAX_CHECK_LENGTH:
            raise InvalidValue(
                f"{field}[{index}] is longer than {MAX_CHECK_LENGTH} characters", f"{field}.{index}"
            )
    return [c.strip() for c in value]


def parse_drill(value: object, field: str = "drill") -> dict[str, Any] | None:
    """A policy's restore drills: the drill target, an optional cron schedule (in the
    policy's time zone) and the checks. The target is checked against the configuration
    by the command, which knows it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidValue(f"{field} must be an object: target, schedule, checks", field)
    unknown = sorted(set(value) - {"target", "schedule", "checks"})
    if unknown:
        raise InvalidValue(f"{field}.{unknown[0]} is not a drill setting", f"{field}.{unknown[0]}")
    target = value.get("target")
    if not isinstance(target, str) or not target:
        raise InvalidValue(f"{field}.target must name a restore target", f"{field}.target")
    return {
        "target": target,
        "schedule": check_cron(value.get("schedule"), f"{field}.schedule"),
        "checks": check_checks(value.get("checks"), f"{field}.checks"),
    }


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValue(f"{field} must be an integer from {low} to {high}", field)
    return value


_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
LSN_PATTERN = _LSN.pattern


def parse_lsn(value: object, field: str = "to_lsn") -> int:
    """A PostgreSQL WAL position ("16/B374D848") as a number that orders as positions do."""
    if not isinstance(value, str) or not _LSN.match(value):
        raise InvalidValue(f"{field} must be a WAL position such as 16/B374D848", field)
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DAY = (
    rf"(?:{_YEAR}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|{_YEAR}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])"
    rf"|{_LEAP}-02-29)"
)
MOMENT_PATTERN = (
    rf"^{_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_MOMENT = re.compile(MOMENT_PATTERN)


def parse_moment(value: object, field: str = "to_time") -> datetime:
    """An RFC 3339 time with its offset (2026-12-01T10:00:00Z): a moment without an offset
    could be any of 24 hours, so it is refused."""
    if not isinstance(value, str) or not _MOMENT.match(value):
        if isinstance(value, str) and re.match(r"^[0-9-]+T[0-9:.]+$", value):
            raise InvalidValue(f"{field} has no offset (add Z for UTC, or +01:00...)", field)
        raise InvalidValue(
            f"{field} must be an RFC 3339 time with its offset, such as 2026-12-01T10:00:00Z", field
        )
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
