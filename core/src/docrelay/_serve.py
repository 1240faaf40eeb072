"""Helpers to run a relay in the foreground: settle documents, serve webhooks.

Used by ``docrelay webhooks``, ``docrelay demo`` and the conformance kit (no pytest needed
here). The webhook server is waitress (pure Python, runs on Windows too): it reads request
bodies up to the receiver's limit, handles chunked bodies, and logs nothing of its own that
could show the secret path segment (a filter rewrites it; access lines come from docrelay).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import BaseWSGIServer, create_server  # type: ignore[import-untyped]

from ._models import FINAL_STATES
from ._notify import MAX_SERVER_BODY, install_secret_path_filter
from ._relay import DocumentStatus, Relay

__all__ = ["REQUEST_DEADLINE", "WebhookServer", "make_server", "settle"]

log = logging.getLogger("docrelay.webhooks")

#: Seconds a connection may take to deliver a whole request (headers and body), from its
#: first byte or, for a new connection, from its opening. A provider sends a notification
#: (64 KiB at most) in milliseconds; a client dripping a body is cut off after this.
REQUEST_DEADLINE = 30.0


def settle(
    relay: Relay, doc_ids: Sequence[str], timeout: float = 20.0, workers: int = 1
) -> list[DocumentStatus]:
    """Deliver until every document in *doc_ids* is final (or *timeout*), waiting for
    retries, polls and webhooks; returns their statuses."""
    deadline = time.monotonic() + timeout
    while True:
        relay.run_until_settled(
            timeout=min(1.0, max(0.05, deadline - time.monotonic())), workers=workers
        )
        statuses = relay.statuses(ids=list(doc_ids))
        pending = [s for s in statuses if s.state not in FINAL_STATES]
        paused = relay.paused()
        parked = [s for s in pending if s.next_attempt_at is None or s.provider in paused]
        if not pending or len(parked) == len(pending) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.02)


class _Channel(HTTPChannel):  # type: ignore[misc]
    """A waitress connection that knows since when it waits for a whole request
    (``waiting_since``: ``None`` while it has none in part, e.g. idle between requests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.waiting_since: float | None = time.monotonic()  # its first request
        super().__init__(*args, **kwargs)

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.waiting_since is None:
            self.waiting_since = time.monotonic()  # the first byte of the next request
        done = bool(super().received(data))
        if self.request is None:
            self.waiting_since = None  # whole: the app has it (or nothing came)
        return done


class _Shedding:
    """Guards one waitress server against slow clients (slowloris): connections that drip a
    request hold waitress's ``connection_limit`` (100), and once it is reached waitress
    accepts no connection at all, so no provider's notification gets in.

    - At the limit, idle keep-alive connections (the least recently active first), then
      the connections that have waited longest for a whole request, are closed to make
      room (never one whose request the app is handling or whose answer is being
      written): a new connection always gets in, and a provider's request, which arrives
      whole at once, is answered before it could become the oldest.
    - A connection that has not delivered a whole request within *deadline* seconds of its
      first byte (or of its opening) is closed, whatever the load.
    """

    def __init__(self, server: Any, deadline: float) -> None:
        self.server, self.deadline = server, deadline
        self.limit = int(server.adj.connection_limit)
        self.room = max(1, self.limit // 10)
        self.next_check = 0.0
        self.last_log = 0.0
        self.readable = server.readable
        server.channel_class = _Channel
        server.readable = self

    def __call__(self) -> bool:
        now = time.monotonic()
        server = self.server
        waiting: list[_Channel] | None = None
        shed = 0
        if len(server._map) >= self.limit:
            waiting = self._waiting()
            extra = len(server._map) - self.limit + self.room
            # Idle keep-alive connections first (closing one is always allowed: its client
            # reconnects), the least recently active first; else a client holding idle
            # connections after one quick request each fills the limit for good.
            for channel in [*self._idle(), *waiting][:extra]:
                channel.will_close = True
                shed += 1
            waiting = [c for c in waiting if not c.will_close]
        if now >= self.next_check:
            self.next_check = now + min(1.0, self.deadline / 4)
            for channel in self._waiting() if waiting is None else waiting:
                if now - (channel.waiting_since or now) > self.deadline:
                    channel.will_close = True
                    shed += 1
        if shed and now - self.last_log > 10.0:
            self.last_log = now
            log.warning(
                "closed %d connection(s) that did not deliver a whole request in time, or "
                "idle or waiting longest for one at the connection limit (slow clients)",
                shed,
            )
        return bool(self.readable())

    def _idle(self) -> list[_Channel]:
        """Keep-alive connections between requests (no request in part, none in the app,
        nothing left to write), the least recently active first."""
        found = [
            c
            for c in list(self.server.active_channels.values())
            if isinstance(c, _Channel)
            and c.waiting_since is None
            and not c.requests
            and not c.will_close
            and not c.total_outbufs_len
        ]
        found.sort(key=lambda c: c.last_activity)
        return found

    def _waiting(self) -> list[_Channel]:
        """Connections with a request in part (or none yet), the longest waiting first."""
        found = [
            c
            for c in list(self.server.active_channels.values())
            if isinstance(c, _Channel)
            and c.waiting_since is not None
            and not c.requests
            and not c.will_close
        ]
        found.sort(key=lambda c: c.waiting_since or 0.0)
        return found


def make_server(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = MAX_SERVER_BODY,
    threads: int = 4,
    trusted_proxy: str | None = None,
    loop_timeout: float = 1.0,
    request_deadline: float = REQUEST_DEADLINE,
) -> Any:
    """A waitress server for *app* (not started: call ``run()``), guarded against slow
    clients (:class:`_Shedding`: a request must arrive whole within *request_deadline*
    seconds, and at the connection limit the connections waiting longest make room)."""
    install_secret_path_filter()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "threads": threads,
        "ident": "docrelay",
        "max_request_body_size": max_body,
        "expose_tracebacks": False,
        "asyncore_loop_timeout": loop_timeout,
    }
    if trusted_proxy:
        options.update(
            trusted_proxy=trusted_proxy,
            trusted_proxy_headers={"x-forwarded-for"},
            clear_untrusted_proxy_headers=True,
        )
    server = create_server(app, **options)
    servers = [server] if isinstance(server, BaseWSGIServer) else [
        d for d in server.map.values() if isinstance(d, BaseWSGIServer)
    ]  # fmt: skip
    for each in servers:  # several with a host name that has several addresses
        _Shedding(each, request_deadline)
    return server


class WebhookServer:
    """Serve a relay's webhook WSGI app on 127.0.0.1 (waitress) in a thread."""

    def __init__(
        self,
        app: Callable[..., Any],
        max_body: int = MAX_SERVER_BODY,
        request_deadline: float = REQUEST_DEADLINE,
    ) -> None:
        self._server = make_server(
            app, max_body=max_body, loop_timeout=0.05, request_deadline=request_deadline
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # closed at shutdown
            self._server.run()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.effective_port}/webhooks"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        server = self._server
        # Requests in hand finish first: closing the server closes the trigger their
        # threads use to wake the loop.
        server.task_dispatcher.shutdown(timeout=5)
        server.close()
        for channel in list(server._map.values()):
            channel.close()
        self._thread.join(5)
