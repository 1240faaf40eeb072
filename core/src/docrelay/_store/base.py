"""What the engine needs from a state store (:class:`Store`). All times are epoch seconds."""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .._models import Attempt, Document, Outcome
from .._records import LeaseLost, Record, Transition

__all__ = ["Store"]


class Store(abc.ABC):
    """What the engine needs from a state store. All times are epoch seconds."""

    url: str
    #: Seconds between the lease keeper's renewals (``None``: a third of the lease).
    renew_every: float | None = None
    #: The lease keeper stops renewing a lease this many seconds after the claim.
    max_hold: float = 3600.0

    # documents ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, document: Document, now: float) -> tuple[Record, str]:
        """Store *document* as :func:`docrelay._lifecycle.admit` decides; returns the record
        and ``"new"``, ``"unchanged"`` or ``"revision"`` (a corrected revision, re-queued)."""

    @abc.abstractmethod
    def submit_many(self, documents: Sequence[Document], now: float) -> int:
        """Store many new documents in one transaction (bulk enqueue); returns how many."""

    @abc.abstractmethod
    def get(self, doc_id: str) -> Record | None: ...

    @abc.abstractmethod
    def select(
        self,
        *,
        ids: Sequence[str] | None = None,
        states: Sequence[str] | None = None,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Record]: ...

    @abc.abstractmethod
    def find(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[Record]: ...

    @abc.abstractmethod
    def find_by_key(self, provider: str, key: str) -> Record | None:
        """The document whose current or previous key is *key*."""

    @abc.abstractmethod
    def find_by_ref(self, provider: str, ref: str) -> Record | None: ...

    @abc.abstractmethod
    def counts(self) -> dict[str, int]: ...

    def depth(self) -> dict[tuple[str, str], int]:
        """Documents per (provider, state): the queue depth the metrics endpoint shows.
        (A store without a faster way counts the records of :meth:`select`.)"""
        out: dict[tuple[str, str], int] = {}
        for rec in self.select():
            key = (rec.provider, rec.state.value)
            out[key] = out.get(key, 0) + 1
        return out

    # claiming ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def claim(
        self, owner: str, now: float, lease: float, limit: int, provider: str | None = None
    ) -> list[Record]:
        """Lease up to *limit* due documents (``next_attempt_at <= now``, provider not paused)
        to *owner* until ``now + lease``. A claimed document's ``next_attempt_at`` becomes the
        lease's end, so a worker that dies leaves it due again when the lease expires."""

    @abc.abstractmethod
    def next_due(self, provider: str | None = None) -> float | None:
        """The earliest ``next_attempt_at`` of any document (paused providers excluded)."""

    @abc.abstractmethod
    def apply(
        self,
        doc_id: str,
        owner: str | None,
        transition: Transition,
        now: float,
        expect_state: str | None = None,
    ) -> None:
        """Apply *transition* (and insert or replace its attempt) in one transaction, one
        write, no read back (:meth:`Transition.applied` gives the new record).

        With *owner*, the change only happens while *owner* holds the lease; with
        *expect_state*, only while the document is in that state and not leased (else
        :class:`LeaseLost`; :class:`NotFoundError` when there is no such document)."""

    @abc.abstractmethod
    def apply_many(
        self, changes: Sequence[tuple[str, str | None, Transition]], now: float
    ) -> list[str]:
        """Apply several ``(doc_id, owner, transition)`` in ONE transaction (group commit:
        the intents of a claimed batch, the outcomes of finished requests); returns the ids
        whose lease was lost (their change is not applied, the others are)."""

    def update(
        self, doc_id: str, owner: str | None, changes: Mapping[str, Any], now: float | None = None
    ) -> Record:
        """Change a document by column names (repairs, tests): :meth:`apply` of
        :meth:`Transition.from_columns`, then read back."""
        when = time.time() if now is None else now
        self.apply(doc_id, owner, Transition.from_columns(changes), when)
        rec = self.get(doc_id)
        assert rec is not None
        return rec

    @abc.abstractmethod
    def wake_held(self, provider: str, now: float) -> int:
        """Make *provider*'s held documents due now (another document changed state)."""

    @abc.abstractmethod
    def extend_leases(self, owner: str, doc_ids: Sequence[str], until: float) -> set[str]:
        """Extend *owner*'s leases on *doc_ids* to at least *until* in one statement (never
        shortened); returns the ids *owner* still holds."""

    def extend_lease(self, doc_id: str, owner: str, until: float) -> None:
        """Extend one lease; :class:`LeaseLost` when *owner* no longer holds it."""
        if doc_id not in self.extend_leases(owner, [doc_id], until):
            raise LeaseLost(f"lease on {doc_id!r} lost")

    @abc.abstractmethod
    def requeue(self, doc_id: str, now: float) -> Record:
        """Apply :func:`docrelay._lifecycle.requeue` and lift the provider's pause, in one
        transaction."""

    # history -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def history(self, doc_id: str) -> list[Attempt]: ...

    @abc.abstractmethod
    def next_attempt_number(self, doc_id: str) -> int: ...

    def next_attempt_numbers(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """:meth:`next_attempt_number` of several documents (one query where the store can)."""
        return {d: self.next_attempt_number(d) for d in doc_ids}

    # notifications -----------------------------------------------------------------------------
    @abc.abstractmethod
    def record_notification(
        self,
        provider: str,
        digest: str,
        doc_id: str | None,
        key: str | None,
        provider_ref: str | None,
        outcome: Outcome | None,
        body: bytes,
        now: float,
        *,
        stored_body_limit: int | None = None,
        max_unmatched: int | None = None,
        max_per_document: int | None = None,
        not_applied: str | None = None,
    ) -> bool:
        """Keep a received notification; ``False`` if the same one (digest) was seen in the
        same delivery round of *doc_id* (its latest send), or ever when it matches no
        document. An unmatched one is stored with its body cut to *stored_body_limit*, and
        at most *max_unmatched* of them per provider are kept (the oldest are dropped and
        counted in :meth:`notification_stats`). Of a document's notifications, at most
        *max_per_document* that are already settled (applied, or marked not applicable) are
        kept besides the new one: the oldest not applicable ones go first, then the oldest
        applied ones (dropped and counted the same way); a waiting one is never dropped.
        With *not_applied* (a note: "for an earlier revision") it is stored as not
        applicable in the same statement, so it is never among the round's waiting ones,
        not even for a moment."""

    @abc.abstractmethod
    def pending_notifications(self, provider: str, doc_id: str) -> list[tuple[int, Outcome]]:
        """Notifications for *doc_id* not applied yet (they came before the send finished),
        from the document's current delivery round only."""

    def notification_stats(self) -> dict[str, dict[str, int]]:
        """Per provider: notifications ``stored``, ``unmatched`` among them, and unmatched
        ones ``dropped`` to keep within the cap."""
        return {}

    @abc.abstractmethod
    def mark_notification(
        self, note_id: int, applied: bool, note: str, *, if_waiting: bool = False
    ) -> None:
        """Mark a notification applied or not applicable, with *note*; *if_waiting*: only
        while it still waits (one marked meanwhile by another process stays as it is)."""

    @abc.abstractmethod
    def notifications(self, doc_id: str | None = None) -> list[dict[str, Any]]: ...

    # providers ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def pause_provider(self, provider: str, reason: str, until: float | None, now: float) -> None:
        """Stop claiming *provider*'s documents (a config error) until *until* or a resume."""

    @abc.abstractmethod
    def resume_provider(self, provider: str) -> None: ...

    @abc.abstractmethod
    def paused(self, now: float) -> dict[str, tuple[str, float | None]]:
        """Paused providers: name -> (reason, until)."""

    # shared limits -----------------------------------------------------------------------------
    def rate_slot(self, bucket: str, interval: float, now: float) -> float | None:
        """Reserve the next send slot of *bucket* spaced *interval* apart, shared by every
        worker of this store; returns the time the slot starts, or ``None`` when the store
        does not share rate limits across processes (the engine limits in-process)."""
        return None

    def shared_token(self, credential: str, now: float) -> tuple[str, float] | None:
        """A token another worker fetched for *credential* (``(value, expires_at)``)."""
        return None

    def save_token(self, credential: str, value: str, expires_at: float) -> None:
        """Share a token with the other workers of this store (no-op when not shared)."""
        return

    def drop_token(self, credential: str, value: str) -> None:
        """Forget a shared token that the provider refused."""
        return

    def token_lock(self, credential: str) -> AbstractContextManager[None] | None:
        """A lock held while fetching a token, across workers (``None``: in-process only).

        The token fetch runs while it is held: a store must not keep a transaction (on SQLite:
        the write lock) open for it."""
        return None

    # lifecycle ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...
