"""The table of contents of a pg_dump custom-format archive, as pg_restore reads it.

A PostgreSQL snapshot keeps its schema as `pg_dump -Fc --schema-only` output. Restoring it
means running its entries in pg_restore's order with pg_restore's rules, selecting and
renaming on the way, so snapledger needs every entry's definition, section and
dependencies. This reader follows the archive layout of pg_backup_archiver.c (format
versions 1.12 to 1.16, pg_dump 9.2 to 17+); pgdumplib reads the same layout but drops the
section stored in the file and guesses it from the entry's type, and guesses wrong for
materialized views and partition attachments, which pg_dump puts in pre-data.

Nothing here is believed on its own: `check_with_pg_restore` compares the entries with
what `pg_restore -l` (the reference reader) lists, section by section.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

MAGIC = b"PGDMP"
MIN_VERSION = (1, 12, 0)
MAX_VERSION = (1, 16, 0)
SECTIONS = {1: "none", 2: "pre-data", 3: "data", 4: "post-data"}
FORMAT_CUSTOM = 1

# pg_restore's passes: ACLs after everything else, then matview data and event triggers.
ACL_KINDS = ("ACL", "ACL LANGUAGE", "DEFAULT ACL")
POST_ACL_KINDS = ("EVENT TRIGGER", "MATERIALIZED VIEW DATA")
SETTING_KINDS = ("ENCODING", "STDSTRINGS", "SEARCHPATH")
NEVER_RUN = ("DATABASE", "DATABASE PROPERTIES", *SETTING_KINDS)


class DumpFormatError(ValueError):
    """The member is not a pg_dump custom-format archive this reader understands."""


@dataclass(frozen=True)
class Entry:
    dump_id: int
    desc: str
    namespace: str
    tag: str
    owner: str
    section: str  # pre-data, data, post-data or none (a comment or ACL takes its object's)
    defn: str
    drop_stmt: str
    deps: tuple[int, ...]
    tablespace: str
    tableam: str
    catalog: tuple[int, int]  # (catalog oid, object oid) in the source, (0, 0) when none

    @property
    def restore_pass(self) -> str:
        if self.desc in ACL_KINDS:
            return "acl"
        if self.desc in POST_ACL_KINDS or (self.desc == "COMMENT" and self.tag.startswith("EVENT TRIGGER ")):
            return "post-acl"
        return "main"


@dataclass
class SchemaDump:
    version: tuple[int, int, int]
    dbname: str
    server_version: str
    dump_version: str
    encoding: str
    entries: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_id = {e.dump_id: e for e in self.entries}
        current = "pre-data"
        self.effective_section: dict[int, str] = {}
        for e in self.entries:  # pg_restore: an unsectioned entry belongs where the last one did
            if e.section != "none":
                current = e.section
            self.effective_section[e.dump_id] = current

    def setting(self, desc: str) -> str | None:
        for e in self.entries:
            if e.desc == desc:
                return e.defn
        return None

    def tables(self) -> dict[tuple[str, str], Entry]:
        return {(e.namespace, e.tag): e for e in self.entries if e.desc == "TABLE"}


class _Reader:
    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.int_size = 4
        self.off_size = 8

    def byte(self) -> int:
        b = self.stream.read(1)
        if not b:
            raise DumpFormatError("the schema dump ends early")
        return b[0]

    def int(self) -> int:
        sign = self.byte()
        raw = self.stream.read(self.int_size)
        if len(raw) != self.int_size:
            raise DumpFormatError("the schema dump ends early")
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def bytes(self) -> bytes | None:
        length = self.int()
        if length < 0:
            return None
        if length > 1 << 30:
            raise DumpFormatError(f"the schema dump claims a {length}-byte string")
        data = self.stream.read(length)
        if len(data) != length:
            raise DumpFormatError("the schema dump ends early")
        return data

    def offset(self) -> None:
        self.byte()  # data state
        if len(self.stream.read(self.off_size)) != self.off_size:
            raise DumpFormatError("the schema dump ends early")


def _python_encoding(pg_encoding: str) -> str:
    from psycopg._encodings import pg2pyenc  # psycopg's own map of server encodings

    try:
        return pg2pyenc(pg_encoding.encode())
    except Exception:
        raise DumpFormatError(f"the schema dump's encoding {pg_encoding!r} is not supported") from None


def read_dump(data: bytes) -> SchemaDump:
    r = _Reader(io.BytesIO(data))
    if r.stream.read(5) != MAGIC:
        raise DumpFormatError("the schema member is not a pg_dump custom-format archive")
    version = (r.byte(), r.byte(), r.byte())
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise DumpFormatError(
            "the schema dump has archive format {}.{}.{}; this snapledger reads 1.12 to 1.16".format(*version)
        )
    r.int_size, r.off_size = r.byte(), r.byte()
    if r.int_size not in (4, 8) or r.off_size not in (4, 8):
        raise DumpFormatError("the schema dump has a damaged header")
    if r.byte() != FORMAT_CUSTOM:
        raise DumpFormatError("the schema dump is not in pg_dump's custom format")
    if version >= (1, 15, 0):
        r.byte()  # compression algorithm
    else:
        r.int()  # compression level
    for _ in range(7):
        r.int()  # creation time
    raw_db, raw_server, raw_dump = r.bytes(), r.bytes(), r.bytes()
    count = r.int()
    if not 0 <= count <= 10_000_000:
        raise DumpFormatError("the schema dump has a damaged table of contents")
    raw: list[dict[str, object]] = []
    for _ in range(count):
        item: dict[str, object] = {"dump_id": r.int(), "had_dumper": r.int()}
        for key in ("tableoid", "oid", "tag", "desc"):
            item[key] = r.bytes()
        item["section"] = r.int()
        for key in ("defn", "drop_stmt", "copy_stmt", "namespace", "tablespace"):
            item[key] = r.bytes()
        item["tableam"] = r.bytes() if version >= (1, 14, 0) else None
        if version >= (1, 16, 0):
            r.int()  # relkind
        item["owner"] = r.bytes()
        r.bytes()  # "with oids", always false since PostgreSQL 12
        deps = []
        while (dep := r.bytes()) is not None:
            deps.append(int(dep))
        item["deps"] = tuple(deps)
        r.offset()
        raw.append(item)
    encoding = "UTF8"
    for item in raw:
        if item["desc"] == b"ENCODING" and isinstance(item["defn"], bytes):
            m = re.search(rb"client_encoding = '([^']+)'", item["defn"])
            if m:
                encoding = m.group(1).decode("ascii")
    codec = _python_encoding(encoding)

    def text(value: object) -> str:
        return value.decode(codec) if isinstance(value, bytes) else ""

    entries = [
        Entry(
            dump_id=int(item["dump_id"]),  # type: ignore[call-overload]
            desc=text(item["desc"]),
            namespace=text(item["namespace"]),
            tag=text(item["tag"]),
            owner=text(item["owner"]),
            section=SECTIONS.get(int(item["section"]), "none"),  # type: ignore[call-overload]
            defn=text(item["defn"]),
            drop_stmt=text(item["drop_stmt"]),
            deps=item["deps"],  # type: ignore[arg-type]
            tablespace=text(item["tablespace"]),
            tableam=text(item["tableam"]),
            catalog=(int(text(item["tableoid"]) or 0), int(text(item["oid"]) or 0)),
        )
        for item in raw
    ]
    return SchemaDump(version, text(raw_db), text(raw_server), text(raw_dump), encoding, entries)


_LIST_LINE = re.compile(r"^(\d+); (\d+) (\d+) ")


def _list_command(pg_restore: str, path: str, section: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [pg_restore, "-l", f"--section={section}", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _listed(proc: subprocess.Popen[bytes]) -> list[int]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        first = detail[0] if detail else f"exit {proc.returncode}"
        raise DumpFormatError(f"pg_restore cannot read the schema dump: {first}")
    lines = out.decode(errors="replace").splitlines()
    return [int(m.group(1)) for line in lines if (m := _LIST_LINE.match(line))]


def check_with_pg_restore(dump: SchemaDump, path: str, pg_restore: str) -> None:
    """pg_restore must list exactly these entries, in this order, in these sections."""
    expected: dict[str, list[int]] = {"pre-data": [], "data": [], "post-data": []}
    for e in dump.entries:
        if e.desc in NEVER_RUN:
            continue
        expected[dump.effective_section[e.dump_id]].append(e.dump_id)
    running = {section: _list_command(pg_restore, path, section) for section in expected}  # at once
    try:
        listed = {section: _listed(proc) for section, proc in running.items()}
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for section, ids in expected.items():
        if listed[section] != ids:
            extra = sorted(set(listed[section]) ^ set(ids))
            raise DumpFormatError(
                f"pg_restore reads the schema dump's {section} differently "
                f"(entries {extra[:5] or 'in another order'})"
            )


def closure(dump: SchemaDump, start: Iterable[int], follow: set[str] | None = None) -> set[int]:
    """Every entry reachable from `start` through dependencies (of the kinds in `follow`)."""
    seen: set[int] = set()
    todo = list(start)
    while todo:
        dump_id = todo.pop()
        if dump_id in seen or dump_id not in dump.by_id:
            continue
        seen.add(dump_id)
        for dep in dump.by_id[dump_id].deps:
            target = dump.by_id.get(dep)
            if target is not None and (follow is None or target.desc in follow):
                todo.append(dep)
    return seen
