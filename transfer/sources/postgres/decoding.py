"""test_decoding's text, read back exactly.

Continuous capture decodes with PostgreSQL's own `test_decoding` plugin: it needs no
publication, so it cannot make a source table without a replica identity refuse its
UPDATEs and DELETEs, as a `pgoutput` publication would. Its lines are stable and fully
specified by contrib/test_decoding:

    table public.orders: INSERT: id[integer]:1 note[text]:'it''s' tags[text[]]:'{a,b}'
    table public.orders: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 ...
    table public.orders: DELETE: id[integer]:2
    table public.a, public.b: TRUNCATE: restart_seqs cascade

Values are the type's output text: numbers and booleans bare, bit strings as B'...', the
rest quoted with '' for a quote; `null` and `unchanged-toast-datum` are bare words.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DecodingError(ValueError):
    """A line that is not what test_decoding writes: the capture stops rather than guess."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type's spelling: "integer", "text[]", "timestamp with time zone"
    value: str | None  # the output text; None for SQL NULL
    unchanged: bool = False  # a TOASTed value the UPDATE did not touch: not sent, not to be set


@dataclass(frozen=True)
class Change:
    action: str  # INSERT, UPDATE, DELETE or TRUNCATE
    tables: tuple[tuple[str, str], ...]  # (schema, table); several only for TRUNCATE
    new: tuple[Column, ...] = ()
    old: tuple[Column, ...] = ()  # the old key (or the whole old row, REPLICA IDENTITY FULL)
    flags: frozenset[str] = field(default_factory=frozenset)  # TRUNCATE: restart_seqs, cascade

    @property
    def table(self) -> tuple[str, str]:
        return self.tables[0]


def _identifier(text: str, pos: int) -> tuple[str, int]:
    """quote_identifier's output at `pos`: "a ""quoted"" one" or a bare word."""
    if text.startswith('"', pos):
        out, i = [], pos + 1
        while True:
            end = text.find('"', i)
            if end < 0:
                raise DecodingError(f"unterminated identifier in {text!r}")
            out.append(text[i:end])
            if text.startswith('"', end + 1):
                out.append('"')
                i = end + 2
                continue
            return "".join(out), end + 1
    i = pos
    while i < len(text) and (text[i].isalnum() or text[i] in "_$"):
        i += 1
    if i == pos:
        raise DecodingError(f"expected an identifier at {pos} in {text!r}")
    return text[pos:i], i


def _qualified(text: str, pos: int) -> tuple[tuple[str, str], int]:
    schema, pos = _identifier(text, pos)
    if not text.startswith(".", pos):
        raise DecodingError(f"expected a schema-qualified table in {text!r}")
    table, pos = _identifier(text, pos + 1)
    return (schema, table), pos


def _value(text: str, pos: int) -> tuple[str | None, bool, int]:
    """(value, unchanged, end) of the literal at `pos`."""
    if text.startswith("'", pos) or text.startswith("B'", pos):
        start = pos + (2 if text[pos] == "B" else 1)
        out, i = [], start
        while True:
            end = text.find("'", i)
            if end < 0:
                raise DecodingError(f"unterminated literal in {text!r}")
            out.append(text[i:end])
            if text.startswith("'", end + 1):
                out.append("'")
                i = end + 2
                continue
            return "".join(out), False, end + 1
    end = text.find(" ", pos)
    end = len(text) if end < 0 else end
    word = text[pos:end]
    if word == "null":
        return None, False, end
    if word == "unchanged-toast-datum":
        return None, True, end
    if not word:
        raise DecodingError(f"expected a value at {pos} in {text!r}")
    return word, False, end  # a number, true/false, NaN or Infinity


def _tuple(text: str, pos: int, stop: str | None = None) -> tuple[tuple[Column, ...], int]:
    columns = []
    while pos < len(text) and text[pos] == " ":
        if stop is not None and text.startswith(stop, pos):
            break
        name, pos = _identifier(text, pos + 1)
        if not text.startswith("[", pos):
            raise DecodingError(f"expected [type] after column {name!r} in {text!r}")
        close = text.find("]:", pos)
        if close < 0:
            raise DecodingError(f"unterminated type of column {name!r} in {text!r}")
        type_ = text[pos + 1 : close]
        value, unchanged, pos = _value(text, close + 2)
        columns.append(Column(name, type_, value, unchanged))
    return tuple(columns), pos


def parse_change(line: str) -> Change:
    if not line.startswith("table "):
        raise DecodingError(f"not a change: {line!r}")
    tables = []
    pos = len("table ")
    while True:
        table, pos = _qualified(line, pos)
        tables.append(table)
        if line.startswith(", ", pos):
            pos += 2
            continue
        break
    if not line.startswith(": ", pos):
        raise DecodingError(f"expected ': ' after the table in {line!r}")
    action_end = line.find(":", pos + 2)
    action = line[pos + 2 : action_end]
    pos = action_end + 1
    if action == "TRUNCATE":
        flags = frozenset(w for w in line[pos:].split() if w in ("restart_seqs", "cascade"))
        return Change(action, tuple(tables), flags=flags)
    if len(tables) != 1 or action not in ("INSERT", "UPDATE", "DELETE"):
        raise DecodingError(f"unknown change {action!r} in {line!r}")
    if line.startswith(" (no-tuple-data)", pos):
        if action != "DELETE":
            raise DecodingError(f"{action} without its row in {line!r}")
        raise DecodingError(
            f"DELETE on {tables[0][0]}.{tables[0][1]} without its key: the table has no replica "
            "identity (give it a primary key or REPLICA IDENTITY FULL)"
        )
    old: tuple[Column, ...] = ()
    if action == "UPDATE" and line.startswith(" old-key:", pos):
        old, pos = _tuple(line, pos + len(" old-key:"), stop=" new-tuple:")
        if not line.startswith(" new-tuple:", pos):
            raise DecodingError(f"UPDATE without its new row in {line!r}")
        pos += len(" new-tuple:")
    columns, pos = _tuple(line, pos)
    if pos != len(line):
        raise DecodingError(f"unexpected text at {pos} in {line!r}")
    if action == "DELETE":
        return Change(action, tuple(tables), old=columns)
    return Change(action, tuple(tables), new=columns, old=old)
