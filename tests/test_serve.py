"""README's first command, for real: `snapledger serve` on embedded defaults over HTTP."""

from __future__ import annotations

import os
import subprocess
import time

import httpx

from tests.servers import free_port, snapledger_exe, wait_until_up


def test_serve_on_embedded_defaults(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPLEDGER_")}
    proc = subprocess.Popen(
        [snapledger_exe(), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, proc)
        deadline = time.monotonic() + 20
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
