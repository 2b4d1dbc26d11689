"""Helpers for tests that run real `snapledger` processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapledger_exe() -> str:
    """The console script of the environment running the tests (README's install)."""
    found = Path(sys.executable).parent / "snapledger"
    return str(found) if found.exists() else (shutil.which("snapledger") or "snapledger")


def wait_until_up(base: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"snapledger serve did not come up at {base} (exit {proc.poll()})")
        time.sleep(0.1)


def write_big_source(directory: Path) -> Path:
    """~40 MB of incompressible NDJSON lines: long enough to watch progress and stop a run."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "events.ndjson", "wb") as f:
        for i in range(40):
            block = os.urandom(512 * 1024).hex()
            lines = [
                f'{{"_id":{i * 1000 + j},"blob":"{block[j * 1000 : j * 1000 + 1000]}"}}' for j in range(1000)
            ]
            f.write(("\n".join(lines) + "\n").encode())
    return directory
