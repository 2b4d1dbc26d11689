"""Regular expressions that say in the OpenAPI document exactly what the validators accept,
so a client (or a fuzzer) reading the contract can tell a good request from a bad one:
numbers in a range, durations up to the longest retention, and cron text whose every
field is in range. Checked against the validators themselves in tests/test_patterns.py."""

from __future__ import annotations

from functools import cache

from domain.values import _CRON_MACROS, _CRON_RANGES, _DURATION_UNITS, MAX_DURATION_SECONDS


def _group(expr: str) -> str:
    return f"(?:{expr})" if "|" in expr else expr


def _fixed(low: str, high: str) -> str:
    """Digit strings of one width from `low` to `high`."""
    if not low:
        return ""
    if low == "0" * len(low) and high == "9" * len(high):
        return f"[0-9]{{{len(low)}}}" if len(low) > 1 else "[0-9]"
    if low[0] == high[0]:
        return low[0] + _group(_fixed(low[1:], high[1:]))
    rest = len(low) - 1
    parts = [low[0] + _group(_fixed(low[1:], "9" * rest))]
    if int(high[0]) - int(low[0]) > 1:
        middle = f"[{int(low[0]) + 1}-{int(high[0]) - 1}]"
        parts.append(middle + (f"[0-9]{{{rest}}}" if rest > 1 else "[0-9]" if rest else ""))
    parts.append(high[0] + _group(_fixed("0" * rest, high[1:])))
    return "|".join(parts)


def number(low: int, high: int) -> str:
    """Decimal integers from low to high, leading zeros allowed (as int() reads them)."""
    parts = []
    for width in range(len(str(low)), len(str(high)) + 1):
        start, end = max(low, 10 ** (width - 1) if width > 1 else 0), min(high, 10**width - 1)
        if start <= end:
            parts.append(_fixed(str(start).zfill(width), str(end).zfill(width)))
    return f"0*(?:{'|'.join(parts)})"


def duration() -> str:
    """'30d', ' 12 h ': a positive number of one unit, at most MAX_DURATION_SECONDS."""
    units = "|".join(
        f"{number(1, MAX_DURATION_SECONDS // seconds)}\\s*{unit}" for unit, seconds in _DURATION_UNITS.items()
    )
    return f"^\\s*(?:{units})\\s*$"


def _cron_field(low: int, high: int) -> str:
    value = number(low, high)
    ranges = "|".join(f"0*{start}-{number(start, high)}" for start in range(low, high + 1))
    item = f"(?:\\*|{value}|(?:{ranges}))(?:/0*[1-9][0-9]*)?"
    return f"{item}(?:,{item})*"


@cache
def cron() -> str:
    """Five fields (minute hour day-of-month month day-of-week), or six with seconds last,
    each a list of *, values or ascending ranges inside the field's bounds, with steps
    other than 0; or a macro such as @daily; or empty (no schedule)."""
    fields = [_cron_field(low, high) for low, high in _CRON_RANGES]
    five = "\\s+".join(fields[:5])
    macros = "|".join(sorted(_CRON_MACROS))
    return f"^\\s*(?:(?:{five})(?:\\s+{fields[5]})?|{macros})?\\s*$"


def _simple(values: list[int]) -> str:
    one = "|".join(f"0*{v}" for v in values)
    return f"(?:{one})(?:,(?:{one}))*"


@cache
def cron_never_fires() -> str:
    """The common schedules with no such date: day 30 or 31 of February only, or day 31 of
    months that have 30 days, with any day of the week (the validator refuses them)."""
    feb = f"{_simple([30, 31])}\\s+{_simple([2])}"
    short = f"{_simple([31])}\\s+{_simple([2, 4, 6, 9, 11])}"
    return f"^\\s*\\S+\\s+\\S+\\s+(?:{feb}|{short})\\s+\\*(?:,\\*)*(?:\\s+\\S+)?\\s*$"
