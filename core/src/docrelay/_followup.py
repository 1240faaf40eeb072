"""After a send left a document unsettled: an ambiguous answer resolved
(reconcile, resend with the same key, or parked), an accepted one polled or moved on by a
notification."""

from __future__ import annotations

import logging

import attrs

from ._context import Context, TransportFailure
from ._host import ProviderHooks
from ._models import (
    Attempt,
    DocState,
    Outcome,
    OutcomeKind,
)
from ._notify import overdue_reason
from ._parts import EngineParts
from ._redact import redact_outcome
from ._round import (
    with_warnings,
)
from ._settings import ProviderRuntime
from ._store import LeaseLost, Record, Transition
from .exceptions import OutcomeError

log = logging.getLogger("docrelay.engine")


__all__ = ["_FollowingUp"]

#: The outcomes of a notification that move an ``accepted`` document.
_MOVES = frozenset({OutcomeKind.DELIVERED, OutcomeKind.REJECTED, OutcomeKind.DUPLICATE})


class _FollowingUp(EngineParts):
    """A part of :class:`~docrelay._engine.Engine`, which inherits it."""

    def _resolve_unknown(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
    ) -> Record | None:
        """After an ambiguous outcome: ``None`` means "resend with the same key"; a record
        means the document was settled (found, parked, or the lookup deferred)."""
        if not hooks.implements("reconcile"):
            if rt.info.deduplicates:
                return None  # the provider recognises the key or the payload
            return self._park_unknown(record, owner, ctx, record.outcome, None)
        started = self.clock()
        lookup_failed = False
        ctx._services.purpose = "reconcile"  # type: ignore[attr-defined]
        try:
            outcome = hooks.reconcile(record.document, ctx)
        except OutcomeError as exc:
            outcome, lookup_failed = redact_outcome(exc.outcome), True
        except TransportFailure as exc:
            outcome, lookup_failed = (
                Outcome(
                    kind=OutcomeKind.RETRY, message=exc.error.message, rule="reconcile:transport"
                ),
                True,
            )
        attempt = Attempt(
            doc_id=record.id,
            number=self.store.next_attempt_number(record.id),
            revision=record.document.revision,
            key=ctx.key,
            action="reconcile",
            started_at=started,
            outcome=outcome,
            duration=self.clock() - started,
        )
        self._observe(hooks, ctx, outcome, "reconcile")
        if lookup_failed:
            assert outcome is not None
            if outcome.kind == OutcomeKind.CONFIG_ERROR:
                return self._finish(record, owner, ctx, hooks, rt, outcome, attempt)
            # The lookup itself failed: look again later, never resend blindly.
            return self._defer(record, owner, ctx, hooks, outcome, attempt, DocState.UNKNOWN)
        if outcome is None:
            if rt.info.deduplicates:
                return None
            return self._park_unknown(record, owner, ctx, record.outcome, attempt)
        if outcome.kind == OutcomeKind.RETRY:
            # Certainly not at the provider: record the lookup, then send again.
            t = Transition(provider_state=ctx.state, attempt=attempt, release=False)
            self._set(record, owner, t, quiet=True)
            return None
        if outcome.kind == OutcomeKind.UNKNOWN:
            return self._park_unknown(record, owner, ctx, outcome, attempt)
        return self._finish(record, owner, ctx, hooks, rt, outcome, attempt)

    def _park_unknown(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        outcome: Outcome | None,
        attempt: Attempt | None,
    ) -> Record:
        if outcome is None or outcome.kind != OutcomeKind.UNKNOWN:
            outcome = Outcome(kind=OutcomeKind.UNKNOWN, message="the send was interrupted")
        reason = (
            "outcome unknown and the provider cannot deduplicate: check the document at the "
            "provider, then `docrelay requeue` to send it again"
        )
        t = Transition(
            state=DocState.UNKNOWN, outcome=outcome, reason=reason, next_at=None, attempt=attempt
        )
        return self._set(record, owner, t)

    def _poll(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
    ) -> Record:
        s = self.settings
        now = self.clock()
        if rt.info.async_validation != "poll" or not hooks.implements("poll_status"):
            if self.store.pending_notifications(record.provider, record.id):
                return self._apply_pending(self._set(record, owner, Transition(), quiet=True))
            t = Transition(next_at=None, reason=overdue_reason(s.notification_timeout))
            return self._set(record, owner, t, quiet=True)
        attempt = self._poll_once(record, ctx, hooks)
        outcome = attempt.outcome
        assert outcome is not None
        polls = record.polls + 1
        if outcome.kind == OutcomeKind.RETRY and outcome.resend:
            t = Transition(
                state=DocState.RETRY_WAIT,
                outcome=outcome,
                attempt=attempt,
                next_at=now,
                polls=0,
                provider_state=ctx.state,
                reason="the provider lost the validation: sending again",
            )
            return self._set(record, owner, t)
        if outcome.kind in (
            OutcomeKind.ACCEPTED,
            OutcomeKind.RETRY,
            OutcomeKind.THROTTLED,
            OutcomeKind.UNKNOWN,
        ):
            if polls >= s.max_polls:
                return self._fail(
                    record,
                    owner,
                    ctx,
                    hooks,
                    outcome,
                    f"validation not finished after {polls} polls",
                    attempt,
                    Transition(polls=polls, provider_state=ctx.state),
                )
            wait = min(s.poll_max, s.poll_initial * 1.5 ** min(polls, 40))
            wait = min(s.max_wait, max(wait, outcome.wait or 0.0))
            t = Transition(
                polls=polls,
                next_at=now + wait,
                provider_state=ctx.state,
                reason=f"accepted; validation pending (poll {polls}), next poll in {wait:.0f} s",
                attempt=attempt,
            )
            return self._set(record, owner, t, quiet=True)
        return self._finish(
            attrs.evolve(record, polls=polls), owner, ctx, hooks, rt, outcome, attempt
        )

    def _poll_once(self, record: Record, ctx: Context, hooks: ProviderHooks) -> Attempt:
        """Ask the provider how the validation stands: the poll attempt, with its outcome."""
        number = self.store.next_attempt_number(record.id)
        started = self.clock()
        ctx._services.purpose = "poll"  # type: ignore[attr-defined]
        try:
            outcome = hooks.poll_status(record.document, ctx)
        except OutcomeError as exc:
            outcome = exc.outcome
        except TransportFailure as exc:
            outcome = Outcome(
                kind=OutcomeKind.RETRY, message=exc.error.message, rule="poll:transport"
            )
        if outcome is None:
            outcome = Outcome(kind=OutcomeKind.ACCEPTED, message="no poll answer")
        outcome = redact_outcome(outcome)
        self._observe(hooks, ctx, outcome, "poll", attempt=record.polls + 1)
        return Attempt(
            doc_id=record.id,
            number=number,
            revision=record.document.revision,
            key=record.key,
            action="poll",
            started_at=started,
            status=outcome.status,
            outcome=outcome,
            duration=self.clock() - started,
        )

    def _apply_pending(self, rec: Record) -> Record:
        """Apply the round's notifications that wait (they arrived before the send's answer
        was committed), the earliest first: the first that moves the document decides."""
        return self.apply_waiting(rec, "applied late")[0]

    def apply_waiting(self, rec: Record, note: str) -> tuple[Record, bool]:
        """Move an ``accepted`` document by the earliest of its round's waiting
        notifications that can move it (marked applied with *note*): the record, and
        whether it was moved here.

        When the document moved meanwhile (another notification of the round was applied
        first, or a worker holds it), nothing is marked here: whoever moved it marks them,
        so a notification applied elsewhere is never marked "not applicable"."""
        if rec.state != DocState.ACCEPTED:
            return rec, False
        for note_id, outcome in self.store.pending_notifications(rec.provider, rec.id):
            if outcome.kind not in _MOVES:
                self.store.mark_notification(note_id, False, "not applicable")
                continue
            applied = self.apply_notification(rec, outcome)
            if applied is None:
                return self.store.get(rec.id) or rec, False
            self.store.mark_notification(note_id, True, note)
            return applied, True
        return rec, False

    def apply_notification(self, rec: Record, outcome: Outcome) -> Record | None:
        """Move an ``accepted`` document forward by a notification; ``None`` if it cannot
        move (already final, or still being sent: then it is applied when the send ends)."""
        if rec.state != DocState.ACCEPTED:
            return None
        if outcome.kind not in _MOVES:
            return None
        rt = self.runtime(rec.provider)
        hooks = self.host.hooks(rec.provider)
        ctx = self.context(rt, rec)
        number = self.store.next_attempt_number(rec.id)
        attempt = Attempt(
            doc_id=rec.id,
            number=number,
            revision=rec.document.revision,
            key=rec.key,
            action="notification",
            started_at=self.clock(),
            outcome=outcome,
            duration=0.0,
        )
        new = (
            DocState.REJECTED
            if outcome.kind == OutcomeKind.REJECTED
            else DocState(outcome.kind.value)
        )
        t = Transition(state=new, outcome=outcome, attempt=attempt, next_at=None)
        if new == DocState.REJECTED:
            t = attrs.evolve(
                t,
                failures=rec.failures + 1,
                reason="rejected by the provider: correct the document and submit it again",
            )
        else:
            t = attrs.evolve(
                t, reason="confirmed by the provider's notification" + with_warnings(outcome)
            )
        try:
            out = self._set(rec, None, t, expect_state=DocState.ACCEPTED.value)
        except LeaseLost:
            return None
        if new == DocState.REJECTED:
            self._on_failure(out, ctx, hooks, outcome)
        else:
            self.store.wake_held(rec.provider, self.clock())
        return out
