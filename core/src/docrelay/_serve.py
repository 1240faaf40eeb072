"""Helpers to run a relay in the foreground: settle documents, serve webhooks.

Used by ``docrelay demo`` and the conformance kit (no pytest needed here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ._models import FINAL_STATES
from ._relay import DocumentStatus, Relay

__all__ = ["WebhookServer", "settle"]


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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class WebhookServer:
    """Serve a relay's webhook WSGI app on 127.0.0.1 in a thread."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/webhooks"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
