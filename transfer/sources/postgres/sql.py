"""pg_dump's SQL read as tokens, so that a rename touches names and never the text of a
literal, a comment or a function body.

A restore that renames a table (`mapping`) must re-point the statements pg_dump wrote for it:
its CREATE TABLE, its sequences, defaults, indexes, constraints, triggers and comments. pg_dump
qualifies every name it prints (`shop.orders`, `"Odd Schema"."a b"`), so a reference is a
name token, a dot and a name token; this module finds those by PostgreSQL's own lexical rules
(quoted identifiers, standard and E'' strings, dollar quotes, nested comments) and replaces
them with identifiers composed by psycopg, never spliced from the archive.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

Qualified = tuple[str, str]  # (schema, name), as PostgreSQL stores them

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*)
  | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
  | (?P<uident>[Uu]&"(?:[^"]|"")*")
  | (?P<ident>"(?:[^"]|"")*")
  | (?P<unterminated>['"])
  | (?P<word>[^\W\d][\w$]*)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<op>::|.)
    """,
    re.X | re.S,
)


class SqlTextError(ValueError):
    """The statement does not lex as PostgreSQL SQL (an unterminated quote or comment)."""


@dataclass(frozen=True)
class Token:
    kind: str  # space, comment, string, dollar, ident, word, number, op
    text: str
    start: int

    @property
    def name(self) -> str | None:
        """The identifier this token stands for, as the catalog stores it; None if not a name."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "ident":
            return self.text[1:-1].replace('""', '"')
        return None

    @property
    def keyword(self) -> str | None:
        return self.text.upper() if self.kind == "word" else None


def tokens(text: str) -> Iterator[Token]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the last alternative matches any character
            raise SqlTextError(f"cannot read SQL at offset {pos}")
        kind = m.lastgroup or "op"
        end = m.end()
        if kind == "block":
            end = _block_end(text, pos)
            kind = "comment"
        elif kind == "dollar":
            close = text.find(m.group(), end)
            if close < 0:
                raise SqlTextError("unterminated dollar-quoted string")
            end = close + len(m.group())
        elif kind == "unterminated":
            raise SqlTextError(f"unterminated quoted text at offset {pos}")
        if kind == "estring":
            kind = "string"
        if kind == "uident":
            kind = "op"  # U&"..." escapes are not decoded: never taken for a name we rename
        yield Token(kind, text[pos:end], pos)
        pos = end


def _block_end(text: str, start: int) -> int:
    depth, pos = 0, start
    while pos < len(text):
        if text.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif text.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    raise SqlTextError("unterminated comment")


def _significant(toks: list[Token]) -> list[int]:
    return [i for i, t in enumerate(toks) if t.kind not in ("space", "comment")]


def parse_qualified(text: str) -> Qualified | None:
    """`shop.orders` or `"Odd Schema"."a b"` as (schema, name); None for anything else."""
    sig = [t for t in tokens(text) if t.kind not in ("space", "comment")]
    if len(sig) == 3 and sig[1].text == "." and sig[0].name is not None and sig[2].name is not None:
        return sig[0].name, sig[2].name
    return None


def _string_value(token: Token) -> str | None:
    """The value of a plain '...' literal (pg_dump writes regclass literals this way)."""
    if token.kind != "string" or not token.text.startswith("'"):
        return None
    return token.text[1:-1].replace("''", "'")


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rewrite(
    text: str,
    relations: Mapping[Qualified, str],
    names: Mapping[str, str] | None = None,
) -> str:
    """Replaces every qualified reference found in `relations` by its new, already quoted,
    qualified text; also inside `'schema.name'::regclass` literals (a serial default's
    nextval). `names` renames unqualified object names where a statement declares or
    names an index or constraint (`CREATE INDEX x`, `ADD CONSTRAINT x`, `CLUSTER ON x`,
    `COMMENT ON CONSTRAINT x`); the values are quoted identifiers too."""
    toks = list(tokens(text))
    sig = _significant(toks)
    out = [t.text for t in toks]
    names = names or {}
    k = 0
    while k < len(sig):
        i = sig[k]
        tok = toks[i]
        # schema . name
        if tok.name is not None and k + 2 < len(sig) and toks[sig[k + 1]].text == ".":
            follows_dot = k > 0 and toks[sig[k - 1]].text == "."
            second = toks[sig[k + 2]]
            key = (tok.name, second.name) if second.name is not None else None
            if not follows_dot and key in relations:
                out[i] = relations[key]  # type: ignore[index]
                for j in range(i + 1, sig[k + 2] + 1):
                    out[j] = ""
                k += 3
                continue
        # 'schema.name'::regclass
        value = _string_value(tok)
        if value is not None and k + 2 < len(sig) and toks[sig[k + 1]].text == "::":
            if toks[sig[k + 2]].keyword == "REGCLASS":
                key = parse_qualified(value)
                if key in relations:
                    out[i] = _quote_literal(relations[key])  # type: ignore[index]
        # INDEX x / CONSTRAINT x / CLUSTER ON x: a declared or named object
        if names and tok.name is not None and tok.name in names and k > 0:
            before = toks[sig[k - 1]].keyword
            before2 = toks[sig[k - 2]].keyword if k > 1 else None
            declares = before in ("INDEX", "CONSTRAINT") or (before == "ON" and before2 == "CLUSTER")
            qualified_next = k + 1 < len(sig) and toks[sig[k + 1]].text == "."
            if declares and not qualified_next:
                out[i] = names[tok.name]
        k += 1
    return "".join(out)


def references(text: str, relations: set[Qualified]) -> bool:
    """Whether the statement names any of these relations outside literals and comments."""
    return rewrite(text, {r: "" for r in relations}) != text
