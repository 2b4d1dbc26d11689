"""README's first command, for real: `snapledger serve` on embedded defaults over HTTP."""

from __future__ import annotations

import os
import subprocess
import time

import httpx

from tests.support.servers import free_port, snapledger_exe, wait_until_up
from tests.support.tally import report


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


def test_sigterm_ends_serve_while_streams_are_open_and_tells_them(tmp_path):
    """A console tab holding /api/v1/stream open kept `serve` waiting for it to close; now
    the stream ends with a `bye` event and the process exits within shutdown_seconds."""
    import signal
    import threading

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPLEDGER_")}
    proc = subprocess.Popen(
        [snapledger_exe(), "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    received: list[str] = []
    try:
        wait_until_up(base, proc)

        def listen() -> None:
            try:
                with httpx.stream("GET", f"{base}/api/v1/stream", timeout=60) as r:
                    for line in r.iter_lines():
                        received.append(line)
            except httpx.HTTPError:
                received.append("<cut>")

        streams = [threading.Thread(target=listen, daemon=True) for _ in range(3)]
        for t in streams:
            t.start()
        deadline = time.monotonic() + 10
        while sum(line.startswith("retry:") for line in received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 15, f"serve took {took:.1f} s to stop with streams open\n{output}"
    assert received.count("event: bye") == 3, received
    report(f"shutdown: SIGTERM with 3 streams open, serve exited in {took:.1f} s, 3 of 3 streams told 'bye'")


def test_after_a_500_the_same_connection_answers_the_next_request(tmp_path, monkeypatch):
    """A 500 used to end with the server dropping the keep-alive connection."""
    import http.client
    import threading

    import uvicorn

    from api.config import load_config
    from api.http import create_app
    from api.records import Records
    from api.runtime import Runtime

    def broken(*args, **kwargs):
        raise RuntimeError("an unexpected bug")

    monkeypatch.setattr(Records, "page", broken)
    runtime = Runtime.build(load_config(None, env={"SNAPLEDGER_DATA_DIR": str(tmp_path)}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, worker=False), port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/backups")
        first = conn.getresponse()
        assert first.status == 500 and b"internal error" in first.read()
        conn.request("GET", "/healthz")  # the same connection
        second = conn.getresponse()
        assert second.status == 200, second.read()
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
