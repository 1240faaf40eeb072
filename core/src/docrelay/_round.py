"""What a delivery round carries and shares: the prepared request, the settled answers
waiting for their group commit, the exchanges told to observers, crash points for tests."""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
from typing import Any

import attrs

from ._context import Context
from ._host import ProviderHooks
from ._models import (
    Attempt,
    DocState,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    TransportError,
)
from ._redact import redact
from ._settings import EngineSettings, ProviderRuntime
from ._store import Record, Transition

__all__ = ["with_warnings"]

log = logging.getLogger("docrelay.engine")

_EVIDENCE = frozenset(
    {DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION, DocState.ACCEPTED,
     DocState.REJECTED}
)  # fmt: skip


class _Again(Exception):
    def __init__(self, outcome: Outcome, wait: float | None) -> None:
        super().__init__(outcome.kind.value)
        self.outcome = outcome
        self.wait = wait


def _retry_hook(exc: Exception) -> bool | float:
    if isinstance(exc, _Again):
        return True if exc.wait is None else float(exc.wait)
    return False


def _crashpoint(name: str) -> None:
    """Test instrumentation: ``DOCRELAY_CRASH_AT=name`` kills the process right here.

    Points: ``after_intent`` (an intent stored, alone or with its batch's, nothing sent),
    ``after_batch_intents`` (a batch's intents stored in one transaction), ``after_response``
    (an answer in, not stored), ``before_commit`` (before a round's outcome, or a batch's
    outcomes, are committed), ``after_outcomes_commit`` (a batch's outcomes stored, hooks
    not told yet)."""
    if os.environ.get("DOCRELAY_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class _BuiltRequests:
    """The requests ``build_request`` gave (providers with ``reuse_request``), one per
    document: the latest revision's, so a correction replaces it. Bounded in entries and in
    body bytes (least recently used first out); a document that settles is dropped."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 8 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, tuple[Any, HttpRequest]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, doc_id: str, key: Any) -> HttpRequest | None:
        with self._lock:
            item = self._items.get(doc_id)
            if item is None or item[0] != key:
                return None
            self._items.move_to_end(doc_id)
            return item[1]

    def put(self, doc_id: str, key: Any, request: HttpRequest) -> None:
        size = len(request.body)
        if size > self.max_bytes // 4:
            return
        with self._lock:
            self._pop(doc_id)
            self._items[doc_id] = (key, request)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                self._pop(next(iter(self._items)))

    def drop(self, doc_id: str) -> None:
        if self._items:
            with self._lock:
                self._pop(doc_id)

    def __len__(self) -> int:
        return len(self._items)

    def _pop(self, doc_id: str) -> None:
        item = self._items.pop(doc_id, None)
        if item is not None:
            self._bytes -= len(item[1].body)


@attrs.frozen
class _Exchange:
    """One HTTP exchange, kept until its step's outcome is known (for on_exchange)."""

    purpose: str
    request: HttpRequest
    response: HttpResponse | None
    error: TransportError | None
    elapsed: float
    waited: float


@attrs.frozen
class _Prepared:
    """A claimed document's first attempt, built in the batch's first pass: its context,
    request and attempt, and the intent stored with the batch's other intents (group
    commit), or the outcome that ended the attempt before any request (*early*)."""

    ctx: Context
    number: int
    request: HttpRequest | None = None
    base: Attempt | None = None
    intent: Transition | None = None
    early: tuple[Outcome, Attempt, bool] | None = None


@attrs.frozen
class _Pending:
    """An answer that settled its round, waiting for the batch's outcome transaction."""

    record: Record
    owner: str
    transition: Transition
    ctx: Context
    hooks: ProviderHooks
    outcome: Outcome


def _answered(
    base: Transition,
    record: Record,
    outcome: Outcome,
    rt: ProviderRuntime,
    s: EngineSettings,
    now: float,
) -> Transition | None:
    """The transition of a provider's answer that settles the round (delivered, duplicate,
    no action, accepted, rejected); ``None`` for the others (deferred or failed)."""
    kind = outcome.kind
    if kind in (OutcomeKind.DELIVERED, OutcomeKind.DUPLICATE, OutcomeKind.NO_ACTION):
        reason = {
            OutcomeKind.DELIVERED: "delivered",
            OutcomeKind.DUPLICATE: "the provider already had it (counts as delivered)",
            OutcomeKind.NO_ACTION: "accepted by the provider, not forwarded",
        }[kind] + with_warnings(outcome)
        if kind == OutcomeKind.DUPLICATE and outcome.message:
            reason += f": {outcome.message}"[:300]
        return attrs.evolve(base, state=DocState(kind.value), reason=reason, next_at=None)
    if kind == OutcomeKind.ACCEPTED:
        if rt.info.async_validation == "poll":
            wait = outcome.wait if outcome.wait is not None else s.poll_initial
            when, reason = now + wait, "accepted; validation pending, polling"
            return attrs.evolve(base, state=DocState.ACCEPTED, next_at=when, polls=0, reason=reason)
        when = now + s.notification_timeout
        reason = "accepted; waiting for the provider's notification"
        return attrs.evolve(base, state=DocState.ACCEPTED, next_at=when, reason=reason)
    if kind == OutcomeKind.REJECTED:
        return attrs.evolve(
            base,
            state=DocState.REJECTED,
            next_at=None,
            failures=record.failures + 1,
            reason=_rejection_reason(outcome),
        )
    return None


def with_warnings(outcome: Outcome) -> str:
    """``" with 2 warning(s): <first>"`` for an outcome that carries warnings, else ``""``."""
    warnings = [
        e for e in outcome.field_errors if (e.severity or "").lower() in ("warning", "w", "warn")
    ]
    if not warnings:
        return ""
    first = warnings[0]
    where = f"{first.field}: " if first.field else ""
    return f" with {len(warnings)} warning(s): {where}{first.message}"[:300]


def _scrubbed(response: HttpResponse) -> HttpResponse:
    """The answer with every known secret masked, before any plugin reads it: a provider
    that echoes a credential back must not get it into an outcome, even when a plugin cuts
    the text before the core's redaction sees it (a prefix of a secret is a leak too)."""
    text = response.body.decode("utf-8", "surrogateescape")
    clean = redact(text)
    values = "\n".join(response.headers.values())
    if clean == text and redact(values) == values:
        return response
    return attrs.evolve(
        response,
        body=clean.encode("utf-8", "surrogateescape"),
        headers={k: redact(v) for k, v in response.headers.items()},
    )


def _rejection_reason(outcome: Outcome) -> str:
    """Who refused the document, and what to do: docrelay before sending, or the provider."""
    if outcome.rule and outcome.rule.startswith("docrelay:"):
        return "refused before sending: correct the document and submit it again"
    return "rejected by the provider: correct the document and submit it again"
