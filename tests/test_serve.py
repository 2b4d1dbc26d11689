"""README's first command, for real: `snapledger serve` on embedded defaults over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snapledger() -> str:
    found = Path(sys.executable).parent / "snapledger"
    return str(found) if found.exists() else (shutil.which("snapledger") or "snapledger")


def test_serve_on_embedded_defaults(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPLEDGER_")}
    proc = subprocess.Popen(
        [_snapledger(), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        r = httpx.post(f"{base}/api/v1/policies", json={"name": "n", "source": "demo", "storage": "local"})
        assert r.status_code == 201, r.text
        sid = httpx.post(f"{base}/api/v1/policies/{r.json()['id']}/snapshots").json()["id"]
        while (row := httpx.get(f"{base}/api/v1/backups/{sid}").json())["status"] != "completed":
            assert row["status"] in ("requested", "running") and time.monotonic() < deadline + 20, row
            time.sleep(0.1)
        assert row["items"] == 3650
        download = httpx.get(f"{base}{row['download_url']}")
        assert download.status_code == 200 and len(download.content) == row["transferred_bytes"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert proc.returncode in (0, -15) and "Application shutdown complete" in output, output
    assert (tmp_path / ".snapledger" / "events.db").exists()
    assert (tmp_path / ".snapledger" / "archives" / "n").is_dir()
