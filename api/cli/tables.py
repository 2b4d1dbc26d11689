"""Records as terminal tables: columns, human sizes and durations, deletion plans."""

from __future__ import annotations

from typing import Any

from api.cli.common import Column, Row, _print_json


# -------------------------------------------------------------- formatting
def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _period(seconds: int | None) -> str:
    """Retention periods back in the units an operator typed them in."""
    if not seconds:
        return "-"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(rows: list[Row], columns: list[Column]) -> str:
    cells = [[cell(r) for _, cell, _ in columns] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, (h, _, _) in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, _, right) in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([h for h, _, _ in columns]), *(line(c) for c in cells)])


def _print_rows(rows: list[Row], columns: list[Column], what: str, as_json: bool) -> int:
    if as_json:
        _print_json(rows)
    elif rows:
        print(table(rows, columns))
    else:
        print(f"no {what}")
    return 0


def _percent(r: Row) -> str:
    return f"{r['progress']:.0f}%" if r.get("progress") is not None else "-"


def _error_column(rows: list[Row]) -> list[Column]:
    """Errors only take room when some row has one."""
    if not any(r.get("error") for r in rows):
        return []
    return [("ERROR", lambda r: _text(r.get("error"))[:80], False)]


def _retention_text(retention: dict[str, Any]) -> str:
    parts = []
    if retention.get("keep_last"):
        parts.append(f"keep {retention['keep_last']}")
    if retention.get("expire_after_seconds"):
        parts.append(f"expire {_period(retention['expire_after_seconds'])}")
    return ", ".join(parts) or "-"


def _collections_text(collections: dict[str, Any]) -> str:
    include, exclude = collections.get("include") or [], collections.get("exclude") or []
    text = ", ".join(include) if include else "all"
    return text + (f" except {', '.join(exclude)}" if exclude else "")


def _schedule_text(r: Row) -> str:
    if not r.get("schedule"):
        return "-"
    return r["schedule"] if r.get("timezone") in (None, "UTC") else f"{r['schedule']} ({r['timezone']})"


POLICY_COLUMNS: list[Column] = [
    ("ID", lambda r: r["id"], False),
    ("NAME", lambda r: r["name"], False),
    ("STATUS", lambda r: r["status"], False),
    ("SOURCE", lambda r: r["source"], False),
    ("STORAGE", lambda r: r["storage"], False),
    ("SCHEDULE", _schedule_text, False),
    ("NEXT RUN", lambda r: _when(r["next_run_at"]), False),
    ("RETENTION", lambda r: _retention_text(r["retention"]), False),
    ("SNAPSHOTS", lambda r: str(r["snapshots_count"]), True),
    ("LAST SUCCESS", lambda r: _when(r["last_success_at"]), False),
]


def _run_columns(extra: list[Column], last: Column) -> list[Column]:
    """Backup and Restore Records share every column but one after the name, and the last."""
    return [
        ("ID", lambda r: r["id"], False),
        ("SUB NAME", lambda r: r["sub_name"], False),
        *extra,
        ("STATUS", lambda r: r["status"], False),
        ("PROGRESS", _percent, True),
        ("ITEMS", lambda r: f"{r['items']:,}" if r.get("items") is not None else "-", True),
        ("TRANSFERRED", lambda r: human_size(r["transferred_bytes"]), True),
        ("ELAPSED", lambda r: human_duration(r["elapsed_seconds"]), True),
        ("CREATED (UTC)", lambda r: _when(r["created_at"]), False),
        last,
    ]


BACKUP_COLUMNS = _run_columns([], ("FILE NAME", lambda r: r["file_name"], False))


def _consistency_text(r: Row) -> str:
    check = r.get("consistency")
    if not check:
        return "-"
    bad = [name for name, c in check.items() if not c.get("ok")]
    return f"mismatch: {', '.join(bad)}" if bad else f"ok ({len(check)})"


RESTORE_COLUMNS = _run_columns(
    [("TARGET", lambda r: r["target"], False)], ("CHECK", _consistency_text, False)
)


def print_plan(plan: dict[str, Any], as_json: bool = False) -> int:
    """What a delete or retention pass removes (or, in a dry run, would remove)."""
    if as_json:
        _print_json(plan)
        return 0
    verb = "would delete" if plan["dry_run"] else "deleted"
    for row in plan["snapshots"]:
        refused = f"  REFUSED: {row['refused']}" if "refused" in row else ""
        print(f"{verb}  {row['sub_name']}  {human_size(row['bytes'])}  {row['archive_key']}{refused}")
    print(f"{plan['count']} snapshot(s), {human_size(plan['bytes'])} of archives")
    return 0
