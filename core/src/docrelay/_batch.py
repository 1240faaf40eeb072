"""Claimed batches: their intents stored together before any request
leaves, their settled answers stored together after (group commit)."""

from __future__ import annotations

import logging

import attrs

from ._host import ProviderHooks
from ._models import (
    FINAL_STATES,
    DocState,
    Outcome,
    OutcomeKind,
)
from ._parts import EngineParts
from ._round import (
    _crashpoint,
    _Pending,
    _Prepared,
)
from ._settings import ProviderRuntime
from ._store import Record, Transition
from .exceptions import DocumentError

log = logging.getLogger("docrelay.engine")


__all__ = ["_Batching"]


class _Batching(EngineParts):
    """A part of :class:`~docrelay._engine.Engine`, which inherits it."""

    def _groupable(self, rt: ProviderRuntime, hooks: ProviderHooks) -> bool:
        """Whether a crash between a grouped intent and its outcome is safe to leave: the
        provider deduplicates a resend with the same key, or docrelay can look it up."""
        return rt.info.deduplicates or hooks.implements("reconcile")

    def _prepare_batch(self, records: list[Record], owner: str) -> dict[str, _Prepared]:
        """The first pass of a batch: build the first request of each document that is
        simply due for a send, and store all their intents in one transaction."""
        plans: dict[str, _Prepared] = {}
        s = self.settings
        now = self.clock()
        stopped: set[str] = set()  # providers whose last build failed short of the document
        numbers = self.store.next_attempt_numbers([r.id for r in records])
        for record in records:
            if record.provider in stopped:
                continue
            if record.state in FINAL_STATES or record.state in (
                DocState.ACCEPTED,
                DocState.SENDING,
                DocState.UNKNOWN,
            ):
                continue
            if record.attempts >= s.max_attempts or (
                record.first_attempt_at and now - record.first_attempt_at > s.max_age
            ):
                continue
            rt = self.runtime(record.provider)
            hooks = self.host.hooks(record.provider)
            if rt.settings.get("enabled") is False or not self._groupable(rt, hooks):
                continue
            ctx = self.context(rt, record)
            try:
                if hooks.implements("hold") and hooks.hold(record.document, ctx):
                    continue  # process asks again at its turn (and holds it)
            except Exception:
                log.exception("hold of %s raised", record.provider)
                continue
            try:
                key = self._ensure_key(record, ctx, hooks)
            except DocumentError:
                continue  # the round refuses it (process does it again)
            except Exception:
                log.exception("idempotency_key of %s raised", record.provider)
                continue
            number = numbers[record.id]
            try:
                built = self._build(record, ctx, hooks, rt, key, number, record.first_attempt_at)
            except Exception:
                log.exception("building the request of %s raised", record.id)
                continue
            if isinstance(built, tuple):
                plans[record.id] = _Prepared(ctx=ctx, number=number, early=built)
                if built[0].kind != OutcomeKind.REJECTED:
                    # A token or auxiliary request failed (a config error pauses the
                    # provider): the batch's other documents take the ordinary path.
                    stopped.add(record.provider)
            else:
                plans[record.id] = attrs.evolve(built, ctx=ctx, number=number)
        intents = [(i, owner, p.intent) for i, p in plans.items() if p.intent is not None]
        if intents:
            # Invariant 2: every key and intent is committed before any request leaves.
            lost = set(self.store.apply_many(intents, self.clock()))
            for doc_id in lost:
                del plans[doc_id]  # process meets the lost lease on its own
            _crashpoint("after_batch_intents")
            _crashpoint("after_intent")  # the intent is stored (here with its batch's)
        return plans

    def _unsend(self, record: Record, owner: str, plan: _Prepared | None) -> None:
        """Hand back a document of a provider paused earlier in its batch; one whose intent
        was stored with the batch's goes back to its state, its attempt marked not sent."""
        if plan is None or plan.intent is None or plan.base is None:
            self._release(record, owner, None, delay=0.0)
            return
        outcome = Outcome(
            kind=OutcomeKind.RETRY,
            message="not sent: the provider was paused by a config error in the same batch",
            rule="docrelay:paused",
        )
        t = Transition(
            state=record.state,
            reason=record.reason,
            first_attempt_at=record.first_attempt_at,
            next_at=self.clock(),
            attempt=attrs.evolve(plan.base, outcome=outcome, duration=0.0),
        )
        try:
            self._set(record, owner, t, quiet=True)
        except Exception:
            log.exception("could not release %s", record.id)

    def _flush(self, pending: list[_Pending]) -> None:
        """Store the settled answers of a batch in one transaction, then tell the hooks."""
        if not pending:
            return
        _crashpoint("before_commit")
        now = self.clock()
        try:
            changes = [(p.record.id, p.owner, p.transition) for p in pending]
            lost = set(self.store.apply_many(changes, now))
        except Exception:
            # Left ``sending`` with their key: resent with it or reconciled after the lease.
            log.exception("could not store the answers of %d document(s)", len(pending))
            return
        _crashpoint("after_outcomes_commit")
        woken: set[str] = set()
        for p in pending:
            if p.record.id in lost:
                self._rescue(p.record, p.transition)
                continue
            rec = p.transition.applied(p.record, now)
            self._changed(rec, p.record.state.value, rec.state.value, p.outcome)
            if rec.state == DocState.ACCEPTED:
                self._apply_pending(rec)
            elif rec.state == DocState.REJECTED:
                self._on_failure(rec, p.ctx, p.hooks, p.outcome)
            else:
                woken.add(rec.provider)
        for name in sorted(woken):
            try:
                self.store.wake_held(name, now)
            except Exception:
                log.exception("could not wake the held documents of %s", name)
