"""The total deadline of a request: one watchdog thread closes the connection of a request
that outlives it (a read timeout bounds only each wait for the next bytes, so an answer that
drips one byte a second would never time out). Used by :mod:`docrelay._transport`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from urllib3.connection import HTTPConnection

__all__ = ["WATCHDOG", "Watch", "WatchedMixin", "current"]


class Watch:
    """One request in flight: its deadline and, once it has one, its connection."""

    __slots__ = ("conn", "deadline", "done", "fired", "lock", "shadow")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        #: A duplicate of a new connection's socket: during a TLS handshake the connection
        #: has no usable ``sock`` yet (the SSL socket detaches the plain one), so a
        #: handshake that drips would otherwise outlive the deadline.
        self.shadow: socket.socket | None = None
        self.fired = False
        self.done = False
        self.lock = threading.Lock()

    def connected(self, sock: socket.socket) -> None:
        """A new connection for this request: keep a handle that can shut it down."""
        with self.lock:
            if self.done:
                return
            if self.shadow is not None:
                self.shadow.close()
            self.shadow = sock.dup()
            if self.fired:
                with contextlib.suppress(OSError):
                    self.shadow.shutdown(socket.SHUT_RDWR)

    def fire(self) -> None:
        """Past the deadline: close the request's connection (unless it has finished)."""
        with self.lock:
            if self.done:
                return
            self.fired = True
            for sock in (getattr(self.conn, "sock", None), self.shadow):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> bool:
        """The request is over; whether the deadline closed its connection first."""
        with self.lock:
            self.done = True
            if self.shadow is not None:
                self.shadow.close()
                self.shadow = None
            return self.fired


current = threading.local()


class WatchedMixin:
    """Tell the watch of this thread's request which connection carries it."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch: Watch | None = getattr(current, "watch", None)
        if watch is not None:
            watch.conn = self  # type: ignore[assignment]
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        watch: Watch | None = getattr(current, "watch", None)
        if watch is not None:
            watch.connected(sock)
        return sock


class Watchdog:
    """One daemon thread that closes the connections of requests past their deadline."""

    def __init__(self, resolution: float = 0.05) -> None:
        self._resolution = resolution
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="docrelay-request-deadline", daemon=True
                )
                self._thread.start()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                now = time.monotonic()
                late = [w for w in self._watches if w.deadline <= now]
                for w in late:
                    self._watches.discard(w)
                soonest = min((w.deadline for w in self._watches), default=now + 1.0)
            for w in late:
                w.fire()
            time.sleep(max(0.001, min(self._resolution, soonest - time.monotonic())))


WATCHDOG = Watchdog()
