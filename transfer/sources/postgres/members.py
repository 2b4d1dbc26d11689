"""What a PostgreSQL archive holds besides its rows (`schema/schema.dump`, `schema/state.json`
and two psql scripts), and how a restore or `verify` checks them before believing them.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from transfer.archive.format import ArchiveError
from transfer.errors import SourceError, TargetError
from transfer.sources.postgres.toc import DumpFormatError, SchemaDump, check_with_pg_restore, read_dump
from transfer.sources.postgres.tools import (
    ToolError,
    find,
)

STATE_FORMAT = 1


SCHEMA_DUMP, STATE, LOAD_SCRIPT, REFRESH_SCRIPT = "schema.dump", "state.json", "load.psql", "refresh.psql"


def check_readable(dump: SchemaDump, data: bytes) -> None:
    """pg_restore, the reference reader, must see the same entries as snapledger does."""
    try:
        pg_restore, _, version = find("pg_restore")
    except ToolError as e:
        raise SourceError(str(e)) from None
    with tempfile.NamedTemporaryFile(prefix="snapledger-schema-", suffix=".dump") as f:
        f.write(data)
        f.flush()
        try:
            check_with_pg_restore(dump, f.name, pg_restore)
        except DumpFormatError as e:
            raise SourceError(
                f"{e} (pg_restore {version}; the dump is from pg_dump {dump.dump_version}: "
                "pg_restore must be at least as new as the pg_dump that wrote it)"
            ) from None


def read_schema(schema: dict[str, bytes]) -> SchemaDump:
    try:
        return read_dump(schema[SCHEMA_DUMP])
    except DumpFormatError as e:
        raise ArchiveError(f"the archive's schema dump cannot be read: {e}") from None


def check_schema(schema: dict[str, bytes]) -> None:
    """What `verify` checks besides checksums: the schema dump reads, with pg_restore too,
    and holds a table for every collection."""
    if SCHEMA_DUMP not in schema:
        return  # an archive of format 1: definitions per table
    dump = read_schema(schema)
    try:
        check_readable(dump, schema[SCHEMA_DUMP])
    except SourceError as e:
        raise ArchiveError(str(e)) from None
    state = read_state(schema)
    for name, table in state["tables"].items():
        if dump.by_id.get(table["dump_id"]) is None or dump.by_id[table["dump_id"]].desc != "TABLE":
            raise TargetError(f"the schema dump has no table for collection {name!r}")


def read_state(schema: dict[str, bytes]) -> dict[str, Any]:
    try:
        state = json.loads(schema[STATE])
    except (KeyError, ValueError):
        raise ArchiveError("the archive's schema/state.json is missing or not JSON") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ArchiveError("the archive's schema/state.json is of an unknown format")
    return state
