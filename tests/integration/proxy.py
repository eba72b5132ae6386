"""A loopback TCP proxy the tests control: pass traffic, stall it, or cut the network."""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import threading
from types import TracebackType


class Mode(enum.Enum):
    PASS = "pass"
    """Forward bytes both ways."""
    STALL = "stall"
    """Keep connections open (and accept new ones) but forward nothing: a black hole."""
    CUT = "cut"
    """Close every connection and close new ones at once: the cable is pulled."""


class TcpProxy:
    """Listens on ``host:port`` (a free port by default) and forwards to ``target``.

    Each connection gets a thread that copies bytes between the two sockets while the mode is
    ``PASS``; ``stall()`` stops the copying (bytes wait in the kernel's buffers, then the
    sender blocks), ``cut()`` closes everything, ``restore()`` goes back to ``PASS`` (a stalled
    connection then carries what was held back).
    """

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._mode = Mode.PASS
        self._changed = threading.Condition()
        self._closing = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def stall(self) -> None:
        self._set(Mode.STALL)

    def cut(self) -> None:
        self._set(Mode.CUT)
        self._close_all()

    def restore(self) -> None:
        self._set(Mode.PASS)

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closing = True
        self._set(Mode.CUT)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        self._close_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _set(self, mode: Mode) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def _close_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self._mode is Mode.CUT:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            try:
                while True:
                    with self._changed:
                        while self._mode is Mode.STALL:
                            self._changed.wait()
                        if self._mode is Mode.CUT:
                            return
                    for key, _ in sel.select(timeout=0.1):
                        src: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = src.recv(65536)
                        if not data:
                            return
                        if self._mode is Mode.STALL:
                            # Hold what was read until restored; then deliver it in order.
                            with self._changed:
                                while self._mode is Mode.STALL:
                                    self._changed.wait()
                            if self._mode is Mode.CUT:
                                return
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    if (a, b) in self._pairs:
                        self._pairs.remove((a, b))
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()
