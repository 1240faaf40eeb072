"""Quiet by default: docrelay logs nowhere until the embedding application configures logging.

- The ``docrelay`` logger gets a :class:`logging.NullHandler`, so its warnings never reach
  Python's last-resort handler (stderr) in an application without logging configuration.
- stamina logs every scheduled retry at WARNING on its own ``stamina`` logger. The retries of
  docrelay's engine are routine (the engine records each attempt), so they are routed to the
  ``docrelay.retries`` logger at DEBUG instead; retries of the application's own stamina
  calls still go to the hooks it had (stamina's defaults unless it set others).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from stamina.instrumentation import RetryDetails, RetryHook, get_on_retry_hooks, set_on_retry_hooks

__all__ = ["install_quiet_logging"]

log = logging.getLogger("docrelay.retries")
_lock = threading.Lock()
_installed = False


class _RouteEngineRetries:
    """A stamina retry hook: the engine's retries to ``docrelay.retries`` at DEBUG, every
    other retry to the hooks that were active before."""

    def __init__(self, others: Sequence[RetryHook]) -> None:
        self.others = tuple(others)

    def __call__(self, details: RetryDetails) -> None:
        cause = type(details.caused_by)
        if cause.__name__ == "_Again" and cause.__module__.startswith("docrelay."):
            log.debug(
                "retry %d scheduled in %.2f s (%s)",
                details.retry_num,
                details.wait_for,
                details.caused_by,
            )
            return
        for hook in self.others:
            hook(details)


def install_quiet_logging() -> None:
    """Install the NullHandler and the retry routing (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        logging.getLogger("docrelay").addHandler(logging.NullHandler())
        current = get_on_retry_hooks()
        if not any(isinstance(h, _RouteEngineRetries) for h in current):
            set_on_retry_hooks([_RouteEngineRetries(current)])
        _installed = True
