"""Helpers for tests that run real `snapledger` processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def serving(config: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`snapledger --config CONFIG serve` on a free port, its output in LOG: yields its base
    URL once it answers, and stops it (SIGTERM, then SIGKILL after 30 s) afterwards."""
    port = free_port()
    with open(log, "w") as out:
        cmd = [snapledger_exe(), "--config", str(config), "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env or dict(os.environ))
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL once `timeout` has passed; whatever it wrote to a pipe is drained."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


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


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: str = "", every: float = 0.1) -> Any:
    """Polls until `predicate` answers something true, and answers it."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


class WorkerProcesses:
    """Real `snapledger worker` processes, each logging to its own file, all stopped
    (resumed first, if a test froze one with SIGSTOP) by close()."""

    def __init__(self, config_path: str | Path, log_dir: Path) -> None:
        self.config_path = str(config_path)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [snapledger_exe(), "--config", self.config_path, "worker"], stdout=log, stderr=log
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("worker-*.log")))
