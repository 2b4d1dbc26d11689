"""A fault-injecting HTTP proxy in front of moto's S3 server.

Faults, each counted in `injected`:
- `reset`: the request is read, then the connection is reset (TCP RST), nothing forwarded;
- `500`: InternalError, nothing forwarded;
- `503`: SlowDown, nothing forwarded;
- `stall`: forwarded (so S3 may have acted on it), then a prefix of the answer (possibly
  none) is sent and the connection goes silent for `stall_seconds` before it closes;
- `truncate`: forwarded, then the answer is cut at a random byte of its body (inside the
  status line when it has none) and the connection closed. (A cut inside the header block
  is not injected: Python's http.client takes EOF there for the end of the headers, so no
  client built on it can tell such an answer is short.)

`fail_every=N` faults every Nth request, taking the faults in turn from `faults` (503
only by default); `rates={"reset": 0.05, ...}` draws a fault per request from a seeded
generator; `always="503"` (or any fault) makes a dead endpoint, `healthy_first=N` one
that dies after answering N requests well. With `once=True` no
request is faulted twice (same method, path, query and Range): retries then always get
through, so a run must succeed however dense the faults, and faults still land on every
kind of request.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("reset", "500", "503", "stall", "truncate")
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


class FaultyProxy:
    def __init__(
        self,
        upstream: str,
        fail_every: int | None = None,
        *,
        rates: dict[str, float] | None = None,
        always: str | None = None,
        faults: tuple[str, ...] = ("503",),
        once: bool = False,
        healthy_first: int = 0,
        seed: int = 0,
        stall_seconds: float = 2.0,
    ) -> None:
        unknown = (set(rates or {}) | set(faults) | ({always} if always else set())) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault {sorted(unknown)[0]!r} (faults: {', '.join(FAULTS)})")
        self.upstream = urlparse(upstream)
        self.fail_every = fail_every
        self.rates = dict(rates or {})
        self.always = always
        self.faults = faults
        self.once = once
        self.healthy_first = healthy_first
        self._faulted: set[tuple[str, str, str]] = set()
        self.rng = random.Random(seed)
        self.stall_seconds = stall_seconds
        self.count = 0
        self.ranged = 0  # requests for part of an object: resumed downloads
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault) of every fault
        self.lock = threading.Lock()
        self._closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers botocore's `Expect: 100-continue` at once

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault, cut = proxy._draw((self.command, self.path, self.headers.get("Range", "")))
                if fault:
                    with proxy.lock:
                        proxy.log.append((self.command, self.path.split("?")[0], fault))
                if fault == "reset":
                    self._reset()
                    return
                if fault in _ERRORS:
                    status, code, message = _ERRORS[fault]
                    payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                    self.wfile.write(_raw(status, [("Content-Type", "application/xml")], payload))
                    self.close_connection = True
                    return
                raw = self._forward(body)
                if fault == "stall":
                    self.wfile.write(raw[: int(cut * len(raw))])
                    self.wfile.flush()
                    proxy._closing.wait(proxy.stall_seconds)
                    self._reset()
                elif fault == "truncate":
                    self.wfile.write(_truncated(raw, cut))
                    self.wfile.flush()
                    self._reset()
                else:
                    self.wfile.write(raw)
                    self.close_connection = True

            def _forward(self, body: bytes) -> bytes:
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "expect")
                }
                headers["Content-Length"] = str(len(body))
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    kept = [
                        (k, v)
                        for k, v in resp.getheaders()
                        if k.lower() not in ("transfer-encoding", "content-length", "connection")
                    ]
                finally:
                    conn.close()
                if self.command == "HEAD":
                    return _raw(resp.status, kept, b"", length=int(resp.getheader("Content-Length") or 0))
                return _raw(resp.status, kept, data)

            def _reset(self) -> None:
                """SO_LINGER 0: close() sends RST, as a crashed server or a middlebox would."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def failed(self) -> int:
        """Faults injected so far, of any kind."""
        return sum(self.injected.values())

    def _draw(self, request: tuple[str, str, str]) -> tuple[str | None, float]:
        """The fault for the next request (or None) and where a cut answer is cut (0-1)."""
        with self.lock:
            self.count += 1
            self.ranged += bool(request[2])
            cut = self.rng.random()
            fault: str | None = None
            if self.count <= self.healthy_first or (self.once and request in self._faulted):
                pass
            elif self.always:
                fault = self.always
            elif self.fail_every and self.count % self.fail_every == 0:
                fault = self.faults[self.failed % len(self.faults)]
            elif self.rates:
                roll = self.rng.random()
                for name, rate in self.rates.items():
                    if roll < rate:
                        fault = name
                        break
                    roll -= rate
            if fault:
                self.injected[fault] += 1
                self._faulted.add(request)
            return fault, cut

    def summary(self) -> str:
        counts = " ".join(f"{name}={self.injected[name]}" for name in FAULTS if self.injected[name])
        return f"requests={self.count} faults={self.failed} ({counts or 'none'})"

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # stalled answers end now
        self.server.shutdown()
        self.server.server_close()


def _raw(status: int, headers: list[tuple[str, str]], body: bytes, length: int | None = None) -> bytes:
    """One complete HTTP/1.1 answer as bytes, so it can be cut anywhere."""
    reason = http.client.responses.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    lines += [f"Content-Length: {len(body) if length is None else length}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _truncated(raw: bytes, cut: float) -> bytes:
    """The answer cut where a client can tell: in the body, or in the status line."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if len(body) > 1:
        return head + sep + body[: max(0, min(len(body) - 1, int(cut * len(body))))]
    return head[: 1 + int(cut * 10)]  # at most "HTTP/1.1 20": no status code a client accepts
