"""PostgreSQL's own client tools: where they are, whether they fit the server, and pg_dump.

pg_dump is the reference for what a schema is, so a backup without it fails rather than
falling back to anything that could lose schema. pg_dump of major version N reads servers
from 9.2 to N; pg_restore of version N reads archives of pg_dump N and older.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import lru_cache

INSTALL_HINT = "install PostgreSQL's client tools (Debian/Ubuntu: apt-get install postgresql-client)"


class ToolError(Exception):
    """A client tool is missing, too old for the server, or failed."""


@lru_cache(maxsize=8)
def _version_of(path: str) -> tuple[int, str]:
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", done.stdout)
    if done.returncode != 0 or m is None:
        raise ToolError(f"{path} --version did not answer like a PostgreSQL tool")
    full = m.group(0).split(")")[-1].strip()
    return int(m.group(1)), full


def find(tool: str) -> tuple[str, int, str]:
    """(path, major version, version text) of pg_dump, pg_restore or psql on PATH."""
    path = shutil.which(tool)
    if path is None:
        raise ToolError(f"{tool} not found on PATH: {INSTALL_HINT}")
    major, text = _version_of(path)
    return path, major, text


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def server_text(version_num: int) -> str:
    if version_num >= 100000:
        return f"{version_num // 10000}.{version_num % 10000}"
    return f"{version_num // 10000}.{version_num // 100 % 100}.{version_num % 100}"


def require_pg_dump(version_num: int) -> tuple[str, str]:
    """pg_dump refuses servers newer than itself; say so before starting, naming both."""
    path, major, text = find("pg_dump")
    if major < server_major(version_num):
        raise ToolError(
            f"pg_dump {text} cannot back up PostgreSQL {server_text(version_num)}: pg_dump must be at "
            f"least as new as the server ({INSTALL_HINT}-{server_major(version_num)})"
        )
    if version_num < 90200:
        raise ToolError(
            f"PostgreSQL {server_text(version_num)} is older than 9.2, which pg_dump {text} needs"
        )
    return path, text


def pattern(name: str) -> str:
    """An exact-name pattern for pg_dump's -n/-e: inside double quotes nothing is special."""
    return '"' + name.replace('"', '""') + '"'


def run_pg_dump(
    pg_dump: str,
    conninfo: str,
    password: str | None,
    snapshot: str,
    schemas: Sequence[str],
    extensions: Sequence[str],
    lock_wait_seconds: int,
) -> bytes:
    """A schema-only custom-format dump taken in the given exported snapshot."""
    args = [
        pg_dump, "--format=custom", "--schema-only", f"--snapshot={snapshot}", "--no-sync",
        f"--lock-wait-timeout={lock_wait_seconds * 1000}", "--dbname", conninfo,
    ]  # fmt: skip
    for schema in schemas:
        args += ["--schema", pattern(schema)]
    for extension in extensions:
        args += ["--extension", pattern(extension)]
    env = {**os.environ, "PGPASSWORD": password or "", "PGAPPNAME": "snapledger", "PGCONNECT_TIMEOUT": "10"}
    with tempfile.TemporaryDirectory(prefix="snapledger-pgdump-") as tmp:
        out = os.path.join(tmp, "schema.dump")
        done = subprocess.run([*args, "--file", out], capture_output=True, env=env, timeout=3600)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            detail = lines[-1] if lines else f"exit code {done.returncode}"
            if password:
                detail = detail.replace(password, "***")
            raise ToolError(f"pg_dump failed: {detail}")
        with open(out, "rb") as f:
            return f.read()
