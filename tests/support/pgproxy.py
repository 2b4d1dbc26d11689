"""A TCP proxy in front of PostgreSQL that can cut or stall it, for outage tests that must
not restart the shared server.

Modes (`proxy.mode = ...`, effective at once):
- `pass`: bytes flow both ways;
- `cut`: every open connection is reset and new ones are refused (closed on accept): a
  server that went away;
- `stall`: open connections go silent (nothing forwarded either way) and new ones are
  accepted but never answered: a frozen server or a black-holed network.
Back to `pass`, stalled connections resume (a healed partition: held bytes are delivered)
and connections accepted while stalled are closed (their clients gave up long ago).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

MODES = ("pass", "cut", "stall")


class PgProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._mode = "pass"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held: list[socket.socket] = []  # accepted while stalled: never answered
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="pgproxy").start()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
        with self._lock:
            self._mode = mode
            if mode == "cut":
                for a, b in self._pairs:
                    _reset(a)
                    _reset(b)
                self._pairs.clear()
            if mode != "stall":
                for s in self._held:
                    _reset(s)
                self._held.clear()

    def close(self) -> None:
        self._closed.set()
        self.mode = "cut"
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode == "cut":
                    _reset(client)
                    continue
                if mode == "stall":
                    self._held.append(client)
                    continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                if self._mode == "cut":  # cut while this one connected
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """One direction; when it fails, both sockets go (a half-dead pair would hang its
        client, which no real outage does once the peer is gone)."""
        try:
            self._forward(src, dst)
        finally:
            with self._lock:
                for pair in ((src, dst), (dst, src)):
                    if pair in self._pairs:
                        self._pairs.remove(pair)
            _reset(src)
            _reset(dst)

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            while self._mode == "stall":  # hold the bytes: the peer hears nothing
                if self._closed.wait(0.05):
                    return
            if self._mode == "cut":
                return
            try:
                dst.sendall(data)
            except OSError:
                return


def _reset(s: socket.socket) -> None:
    """Close with RST, as a dead peer's kernel would answer. The shutdown comes first: a
    close alone leaves the socket open while a pump thread sits in recv on it."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
