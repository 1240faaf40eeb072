"""Helpers to run a relay in the foreground: settle documents, serve webhooks.

Used by ``docrelay webhooks``, ``docrelay demo`` and the conformance kit (no pytest needed
here). The webhook server is waitress (pure Python, runs on Windows too): it reads request
bodies up to the receiver's limit, handles chunked bodies, and logs nothing of its own that
could show the secret path segment (a filter rewrites it; access lines come from docrelay).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from waitress.server import create_server  # type: ignore[import-untyped]

from ._models import FINAL_STATES
from ._notify import MAX_SERVER_BODY, install_secret_path_filter
from ._relay import DocumentStatus, Relay

__all__ = ["WebhookServer", "make_server", "settle"]


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


def make_server(
    app: Callable[..., Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = MAX_SERVER_BODY,
    threads: int = 4,
    trusted_proxy: str | None = None,
    loop_timeout: float = 1.0,
) -> Any:
    """A waitress server for *app* (not started: call ``run()``)."""
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
    return create_server(app, **options)


class WebhookServer:
    """Serve a relay's webhook WSGI app on 127.0.0.1 (waitress) in a thread."""

    def __init__(self, app: Callable[..., Any], max_body: int = MAX_SERVER_BODY) -> None:
        self._server = make_server(app, max_body=max_body, loop_timeout=0.05)
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
