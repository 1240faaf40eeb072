"""The lease keeper: the leases of the documents an engine works on stay alive until the
engine lets them go.

A lease says "this worker is on it"; when it runs out, another worker may claim the document.
It must therefore never run out while its worker is alive and busy with the document: not
while a batch waits its turn, not while an answer drips in, not while a rate-limit slot or an
in-process retry is awaited. One daemon thread per engine extends the held leases every third
of the lease; a worker that dies stops extending them, so they run out and the document is
claimed again (or sooner, when the owner is provably gone). A lease is kept for at most
*max_hold* seconds, so a hung worker does not keep a document for ever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from ._store import LeaseLost, Store

__all__ = ["LeaseKeeper"]

log = logging.getLogger("docrelay.engine")


class LeaseKeeper:
    """Extends the leases of held documents every ``lease / 3`` seconds."""

    def __init__(
        self,
        store: Store,
        lease: float,
        clock: Callable[[], float] = time.time,
        max_hold: float = 3600.0,
    ) -> None:
        self._store = store
        self._lease = lease
        self._clock = clock
        self._max_hold = max_hold
        #: doc id -> (owner, when the hold began, on the monotonic clock)
        self._held: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, owner: str, doc_ids: Iterable[str]) -> None:
        """Keep these documents' leases (claimed by *owner*) alive until :meth:`release`."""
        started = time.monotonic()
        with self._lock:
            for doc_id in doc_ids:
                self._held[doc_id] = (owner, started)
            if self._held and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._loop, name="docrelay-lease-keeper", daemon=True
                )
                self._thread.start()

    def release(self, doc_id: str) -> None:
        with self._lock:
            self._held.pop(doc_id, None)

    def holds(self, doc_id: str) -> bool:
        with self._lock:
            return doc_id in self._held

    def beat(self) -> int:
        """Extend every held lease now; returns how many are still held."""
        now_mono = time.monotonic()
        with self._lock:
            held = dict(self._held)
        until = self._clock() + self._lease
        kept = 0
        for doc_id, (owner, started) in held.items():
            if now_mono - started > self._max_hold:
                log.warning(
                    "lease on %s held for over %.0f s: no longer extended", doc_id, self._max_hold
                )
                self._drop(doc_id, owner)
                continue
            try:
                self._store.extend_lease(doc_id, owner, until)
                kept += 1
            except LeaseLost:
                self._drop(doc_id, owner)  # finished meanwhile, or taken over
            except Exception:  # the next beat tries again
                log.warning("could not extend the lease on %s", doc_id, exc_info=True)
                kept += 1
        return kept

    def _drop(self, doc_id: str, owner: str) -> None:
        with self._lock:
            if self._held.get(doc_id, (None,))[0] == owner:
                del self._held[doc_id]

    def _loop(self) -> None:
        every = max(0.05, self._lease / 3.0)
        while True:
            time.sleep(every)
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
            self.beat()
