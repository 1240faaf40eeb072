"""The lease keeper: the leases of the documents an engine works on stay alive until the
engine lets them go.

A lease says "this worker is on it"; when it runs out, another worker may claim the document.
It must therefore never run out while its worker is alive and busy with the document: not
while a batch waits its turn, not while an answer drips in, not while a rate-limit slot or an
in-process retry is awaited. One daemon thread per engine extends the held leases every third
of the lease (one statement per owner), on SQLite and PostgreSQL alike, and
:meth:`LeaseKeeper.renew` extends a lease right before its request leaves: one mechanism, no
other. A worker that dies stops extending them, so they run out and the document is claimed
again (or sooner, when the owner is provably gone). A lease is kept for at most *max_hold*
seconds, so a hung worker does not keep a document for ever.
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
    """Extends the leases of held documents every ``lease / 3`` seconds (or the store's
    :attr:`~docrelay._store.Store.renew_every`), one statement per owner, on any backend;
    :meth:`renew` extends one lease right before its request leaves."""

    def __init__(
        self,
        store: Store,
        lease: float,
        clock: Callable[[], float] = time.time,
        max_hold: float | None = None,
    ) -> None:
        self._store = store
        self._lease = lease
        self._clock = clock
        self._max_hold = store.max_hold if max_hold is None else max_hold
        self._every = store.renew_every or max(0.05, lease / 3.0)
        #: doc id -> (owner, when the hold began, on the monotonic clock)
        self._held: dict[str, tuple[str, float]] = {}
        #: doc id -> the lease's end as last confirmed by the store (claim or extension)
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, owner: str, doc_ids: Iterable[str], until: float | None = None) -> None:
        """Keep these documents' leases (claimed by *owner*, until *until* if known) alive
        until :meth:`release`."""
        started = time.monotonic()
        with self._lock:
            for doc_id in doc_ids:
                self._held[doc_id] = (owner, started)
                if until is not None:
                    self._until[doc_id] = until
            if self._held and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._loop, name="docrelay-lease-keeper", daemon=True
                )
                self._thread.start()

    def release(self, doc_id: str) -> None:
        with self._lock:
            self._held.pop(doc_id, None)
            self._until.pop(doc_id, None)

    def holds(self, doc_id: str) -> bool:
        with self._lock:
            return doc_id in self._held

    def renew(self, doc_id: str, owner: str) -> None:
        """Extend one lease now (right before a request leaves); :class:`LeaseLost` when
        *owner* no longer holds it (a stalled worker whose document was taken over).

        No write while the store confirmed the lease (at the claim or the keeper's last
        extension) for more than half a lease still: until then no other worker can have
        claimed it (a claim needs the lease run out), so the answer would be the same."""
        now = self._clock()
        with self._lock:
            confirmed = (
                self._until.get(doc_id) if self._held.get(doc_id, ("",))[0] == owner else None
            )
        if confirmed is not None and confirmed - now > self._lease / 2:
            return
        until = now + self._lease
        if doc_id not in self._store.extend_leases(owner, [doc_id], until):
            self._drop(doc_id, owner)
            raise LeaseLost(f"lease on {doc_id!r} lost")
        with self._lock:
            if doc_id in self._held:
                self._until[doc_id] = until

    def beat(self) -> int:
        """Extend every held lease now; returns how many are still held."""
        now_mono = time.monotonic()
        with self._lock:
            held = dict(self._held)
        until = self._clock() + self._lease
        groups: dict[str, list[str]] = {}
        for doc_id, (owner, started) in held.items():
            if now_mono - started > self._max_hold:
                log.warning(
                    "lease on %s held for over %.0f s: no longer extended", doc_id, self._max_hold
                )
                self._drop(doc_id, owner)
                continue
            groups.setdefault(owner, []).append(doc_id)
        kept = 0
        for owner, ids in groups.items():
            try:
                alive = self._store.extend_leases(owner, ids, until)
            except Exception:  # the next beat tries again
                log.warning("could not extend the leases of %s", owner, exc_info=True)
                kept += len(ids)
                continue
            kept += len(alive)
            with self._lock:
                for doc_id in alive:
                    if doc_id in self._held:
                        self._until[doc_id] = until
            for doc_id in set(ids) - alive:
                self._drop(doc_id, owner)  # finished meanwhile, or taken over
        return kept

    def _drop(self, doc_id: str, owner: str) -> None:
        with self._lock:
            if self._held.get(doc_id, (None,))[0] == owner:
                del self._held[doc_id]
                self._until.pop(doc_id, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._every)
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
            self.beat()
