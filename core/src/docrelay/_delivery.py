"""One document's delivery round: key, build, send, classify, in-process
retries, and the transition the answer asks for."""

from __future__ import annotations

import json
import logging
import random
import time

import attrs
import stamina

from ._context import Context, TransportFailure
from ._host import ProviderHooks
from ._models import (
    Attempt,
    DocState,
    Document,
    HttpRequest,
    Outcome,
    OutcomeKind,
)
from ._parts import EngineParts
from ._redact import redact, redact_outcome
from ._round import (
    _Again,
    _answered,
    _crashpoint,
    _Pending,
    _Prepared,
    _retry_hook,
)
from ._services import _Services
from ._settings import ProviderRuntime
from ._store import KEEP, Record, Transition
from .exceptions import ConfigError, DocumentError, OutcomeError

log = logging.getLogger("docrelay.engine")


__all__ = ["_Delivering"]


class _Delivering(EngineParts):
    """A part of :class:`~docrelay._engine.Engine`, which inherits it."""

    def _ensure_key(self, record: Record, ctx: Context, hooks: ProviderHooks) -> str:
        if ctx.key is not None:
            return ctx.key
        key = hooks.idempotency_key(record.document, ctx)
        if not isinstance(key, str) or not key:
            raise DocumentError(f"provider {record.provider} returned no idempotency key")
        ctx.key = key
        return key

    def _deliver(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        plan: _Prepared | None = None,
    ) -> Record:
        s = self.settings
        doc = record.document
        number = self.store.next_attempt_number(record.id) if plan is None else plan.number
        attempts = record.attempts
        first_attempt_at = record.first_attempt_at
        reauthed = refreshed = False
        # The resend a token refresh or a re-read asked for, not made yet (the round's
        # in-process timeout ended it first): the round ends for a retry, not failed.
        resend_owed = False
        last: tuple[Outcome, Attempt | None] | None = None
        try:
            key = self._ensure_key(record, ctx, hooks)
        except DocumentError as exc:
            out = Outcome(kind=OutcomeKind.REJECTED, message=str(exc), rule="docrelay:key")
            return self._finish(record, owner, ctx, hooks, rt, out, None)

        sent = 0  # sends in this round

        def step() -> None:
            """One attempt; raises :class:`_Again` when it asks for an in-process retry."""
            nonlocal plan, number, first_attempt_at, attempts, last, reauthed, refreshed, sent
            nonlocal resend_owed
            if attempts >= s.max_attempts:
                return
            sent += 1
            resend_owed = False
            outcome, attempt, counted = self._send_once(
                record, owner, ctx, hooks, rt, key, number, first_attempt_at, plan
            )
            plan = None  # the batch's first pass prepared the first attempt only
            number += 1
            first_attempt_at = first_attempt_at or attempt.started_at
            if counted:
                attempts += 1
            last = (outcome, attempt)
            kind = outcome.kind
            if kind == OutcomeKind.REAUTH and not reauthed:
                reauthed = True
                for cred, value in ctx._services.used_tokens.items():  # type: ignore[attr-defined]
                    self.tokens.invalidate(cred, value)
                self._record(record, owner, ctx, attempt, attempts, first_attempt_at)
                resend_owed = True
                raise _Again(outcome, 0.0)
            if kind == OutcomeKind.STALE and not refreshed:
                refreshed = True
                self._record(record, owner, ctx, attempt, attempts, first_attempt_at)
                ctx._services.purpose = "refresh"  # type: ignore[attr-defined]
                try:
                    fresh = hooks.refresh_resource(doc, ctx)
                except OutcomeError as exc:
                    # The re-read decided the round (for example: the resource was
                    # changed at the provider, so resending would overwrite that).
                    decided = redact_outcome(exc.outcome)
                    if decided.kind != OutcomeKind.STALE:
                        reread = Attempt(
                            doc_id=doc.id,
                            number=number,
                            revision=doc.revision,
                            key=key,
                            action="refresh",
                            started_at=self.clock(),
                            status=decided.status,
                            outcome=decided,
                        )
                        last = (decided, reread)
                        return
                    fresh = False
                except TransportFailure as exc:
                    log.warning("re-reading %s after 412 failed: %s", doc.id, exc)
                    fresh = False
                finally:
                    self._observe(hooks, ctx, None, "refresh")
                if fresh:
                    resend_owed = True
                    raise _Again(outcome, 0.0)
            elif kind in (OutcomeKind.RETRY, OutcomeKind.THROTTLED) or (
                kind == OutcomeKind.UNKNOWN and rt.info.deduplicates
            ):
                wait = outcome.wait
                # A Retry-After waited in process must fit in what is left of the round's
                # inprocess_timeout (stamina checks its timeout only after the wait).
                fits = wait is None or (
                    wait <= s.retry_after_cap
                    and time.monotonic() - begun + wait <= s.inprocess_timeout
                )
                # At most inprocess_attempts sends in a round (the first included); a token
                # refresh or a re-read after 412 adds its one resend on top.
                budget = s.inprocess_attempts + int(reauthed) + int(refreshed)
                if fits and attempts < s.max_attempts and sent < budget:
                    self._record(record, owner, ctx, attempt, attempts, first_attempt_at)
                    raise _Again(outcome, wait)

        begun = time.monotonic()
        try:
            # The first attempt runs without a retry context (most rounds need none). One that
            # asks for a retry is replayed as the first try of stamina's context, so stamina
            # alone schedules every retry (its wait, its attempt budget, its hooks) as before.
            step()
        except _Again as exc:
            replay: _Again | None = exc
            try:
                for try_ in stamina.retry_context(
                    on=_retry_hook,
                    attempts=max(1, s.inprocess_attempts) + 2,  # + a token refresh, a re-read
                    # the time the first attempt took counts, as it did inside the context
                    timeout=max(1e-6, s.inprocess_timeout - (time.monotonic() - begun)),
                    wait_initial=s.retry_wait_initial,
                    wait_max=s.retry_wait_max,
                    wait_jitter=s.retry_wait_jitter,
                ):
                    with try_:
                        if replay is not None:
                            again, replay = replay, None
                            raise again
                        step()
            except _Again:
                pass  # stamina gave up: the last outcome decides below
        assert last is not None or attempts >= s.max_attempts
        if last is None:
            return self._fail(record, owner, ctx, hooks, record.outcome, "attempt budget spent")
        outcome, last_attempt = last
        record = attrs.evolve(record, attempts=attempts, first_attempt_at=first_attempt_at)
        if resend_owed and outcome.kind in (OutcomeKind.REAUTH, OutcomeKind.STALE):
            # The token was refreshed (or the resource re-read), but the round's time was
            # up before the resend: nothing says the resend would be refused.
            outcome = attrs.evolve(
                outcome,
                kind=OutcomeKind.RETRY,
                message=(outcome.message or "")
                + " (resend after the token refresh or re-read left for a later round:"
                " inprocess_timeout reached)",
            )
        elif outcome.kind == OutcomeKind.REAUTH:
            outcome = attrs.evolve(
                outcome,
                kind=OutcomeKind.CONFIG_ERROR,
                message=(outcome.message or "") + " (still refused after a token refresh)",
            )
        elif outcome.kind == OutcomeKind.STALE:
            outcome = attrs.evolve(
                outcome,
                kind=OutcomeKind.REJECTED,
                message=(outcome.message or "precondition failed")
                + " (still stale after re-reading the resource)",
            )
        return self._finish(record, owner, ctx, hooks, rt, outcome, last_attempt)

    def _record(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        attempt: Attempt,
        attempts: int,
        first_attempt_at: float | None,
    ) -> None:
        """Store an attempt that will be retried in process (the state stays ``sending``)."""
        t = Transition(
            attempts=attempts,
            provider_state=ctx.state,
            outcome=attempt.outcome,
            first_attempt_at=first_attempt_at,
            attempt=attempt,
            release=False,
        )
        self._set(record, owner, t, quiet=True)

    def _build(
        self,
        record: Record,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        key: str,
        number: int,
        first_attempt_at: float | None,
    ) -> _Prepared | tuple[Outcome, Attempt, bool]:
        """One attempt's request and intent; or the outcome that ends it before any request
        (the document refused, an auxiliary request failed)."""
        doc = record.document
        ctx.attempt += 1
        started = self.clock()
        base = Attempt(
            doc_id=doc.id,
            number=number,
            revision=doc.revision,
            key=key,
            action="send",
            started_at=started,
        )
        try:
            request = self._build_request(doc, ctx, hooks, rt)
            if request is None:
                raise ConfigError(f"provider {rt.info.name} built no request for {doc.kind!r}")
            request = request.with_headers(hooks.auth_headers(request, ctx))
            extra = hooks.prepare_headers(request, ctx)
            if rt.info.idempotency_header:
                extra[rt.info.idempotency_header] = key
            if extra:
                request = request.with_headers(extra)
        except DocumentError as exc:
            out = Outcome(
                kind=OutcomeKind.REJECTED,
                message=redact(str(exc)),
                rule="docrelay:refused-before-send",
            )
            self._observe(hooks, ctx, out, "send")
            return out, attrs.evolve(base, outcome=out, duration=0.0), False
        except OutcomeError as exc:
            out = redact_outcome(exc.outcome)
            counted = out.kind not in (OutcomeKind.THROTTLED,)
            self._observe(hooks, ctx, out, "send")
            return out, attrs.evolve(base, outcome=out, duration=self.clock() - started), counted
        except TransportFailure as exc:
            out = Outcome(
                kind=OutcomeKind.RETRY, message=exc.error.message, rule="docrelay:auxiliary-request"
            )
            self._observe(hooks, ctx, out, "send")
            return out, attrs.evolve(base, outcome=out, duration=self.clock() - started), True
        started = self.clock()
        base = attrs.evolve(base, started_at=started, request=request.summary())
        intent = Transition(
            state=DocState.SENDING,
            key=key,
            key_revision=doc.revision,
            provider_state=ctx.state,
            first_attempt_at=first_attempt_at or started,
            reason=f"attempt {number} in flight",
            attempt=base,
            release=False,
        )
        return _Prepared(ctx=ctx, number=number, request=request, base=base, intent=intent)

    def _build_request(
        self, doc: Document, ctx: Context, hooks: ProviderHooks, rt: ProviderRuntime
    ) -> HttpRequest | None:
        """``build_request``, or the request it built for the same revision, key and state
        (providers that declare ``reuse_request``: an in-process retry or a later resend)."""
        if not rt.info.reuse_request:
            return hooks.build_request(doc, ctx)
        try:
            state = json.dumps(ctx.state, sort_keys=True)
        except (TypeError, ValueError):
            return hooks.build_request(doc, ctx)
        key = (doc.provider, doc.revision, ctx.key, state)
        request = self.built.get(doc.id, key)
        if request is not None:
            return request
        services: _Services = ctx._services  # type: ignore[assignment]
        exchanges, tokens = len(services.exchanges), services.token_reads
        request = hooks.build_request(doc, ctx)
        if (
            request is not None
            and len(services.exchanges) == exchanges
            and services.token_reads == tokens
            and json.dumps(ctx.state, sort_keys=True) == state
        ):
            self.built.put(doc.id, key, request)
        return request

    def _send_once(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        key: str,
        number: int,
        first_attempt_at: float | None,
        plan: _Prepared | None = None,
    ) -> tuple[Outcome, Attempt, bool]:
        """One attempt; *plan*: built (and its intent stored) by the batch's first pass."""
        doc = record.document
        if plan is None:
            built = self._build(record, ctx, hooks, rt, key, number, first_attempt_at)
            if isinstance(built, tuple):
                return built
            # Invariant 2: the key and the intent are committed before the request leaves.
            assert built.intent is not None
            self._set(record, owner, built.intent, quiet=True)
            _crashpoint("after_intent")
            plan = built
        elif plan.early is not None:
            return plan.early
        request, base = plan.request, plan.base
        assert request is not None
        assert base is not None
        started = base.started_at
        # self.http takes the rate slot right before the request leaves (after the intent's
        # commit), so the spacing the provider sees is not blurred by the store's latency.
        response, error = self.http(
            rt,
            request,
            lease=(doc.id, owner),
            exchanges=ctx._services.exchanges,  # type: ignore[attr-defined]
            scrub=True,
        )
        _crashpoint("after_response")
        # A certificate that does not verify or a URL docrelay refused is a matter of
        # configuration, whatever the provider: _classify answers it, not the classifier.
        outcome = redact_outcome(hooks.classify_response(response, error, ctx, doc))
        attempt = attrs.evolve(
            base,
            status=response.status if response is not None else None,
            outcome=outcome,
            duration=self.clock() - started,
        )
        counted = outcome.kind not in (OutcomeKind.THROTTLED, OutcomeKind.REAUTH, OutcomeKind.STALE)
        self._observe(hooks, ctx, outcome, "send")
        return outcome, attempt, counted

    def _finish(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        outcome: Outcome,
        attempt: Attempt | None,
    ) -> Record:
        s = self.settings
        now = self.clock()
        kind = outcome.kind
        base = Transition(
            provider_state=ctx.state,
            attempts=record.attempts,
            first_attempt_at=record.first_attempt_at,
            provider_ref=outcome.provider_ref or KEEP,
            key=KEEP if ctx.key is None else ctx.key,
            key_revision=KEEP if ctx.key is None else record.document.revision,
            outcome=outcome,
            attempt=attempt,
        )
        answered = _answered(base, record, outcome, rt, s, now)
        pending: list[_Pending] | None = getattr(self._local, "pending", None)
        if answered is not None and pending is not None and self._groupable(rt, hooks):
            # Stored with the batch's other answers (run_once), then the hooks are told.
            pending.append(_Pending(record, owner, answered, ctx, hooks, outcome))
            return answered.applied(record, now)
        if answered is not None:
            rec = self._set(record, owner, answered)
            if rec.state == DocState.ACCEPTED:
                return self._apply_pending(rec)
            if rec.state == DocState.REJECTED:
                self._on_failure(rec, ctx, hooks, outcome)
            else:
                self.store.wake_held(record.provider, now)
            return rec
        if kind == OutcomeKind.CONFIG_ERROR:
            until = now + s.pause_seconds if s.pause_seconds is not None else None
            self.store.pause_provider(
                record.provider, f"config error: {outcome.describe()}", until, now
            )
            return self._fail(
                record,
                owner,
                ctx,
                hooks,
                outcome,
                "config error",
                attempt,
                base,
                next_step="provider paused: fix the configuration, then "
                f"`docrelay requeue {record.id}`",
            )
        # retry, throttled, unknown: defer durably, or fail when the budget is spent.
        if record.attempts >= s.max_attempts:
            why = f"attempt budget spent ({record.attempts} attempts)"
            return self._fail(record, owner, ctx, hooks, outcome, why, attempt, base)
        if record.first_attempt_at and now - record.first_attempt_at > s.max_age:
            return self._fail(
                record, owner, ctx, hooks, outcome, "time budget spent", attempt, base
            )
        target = DocState.UNKNOWN if kind == OutcomeKind.UNKNOWN else DocState.RETRY_WAIT
        return self._defer(record, owner, ctx, hooks, outcome, attempt, target, base)

    def _defer(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        outcome: Outcome,
        attempt: Attempt | None,
        target: DocState,
        base: Transition | None = None,
    ) -> Record:
        s = self.settings
        n = max(1, record.attempts)
        backoff = min(s.deferral_max, s.deferral_initial * 2 ** (n - 1))
        backoff *= random.uniform(0.8, 1.2)
        if outcome.kind == OutcomeKind.THROTTLED and outcome.wait is None:
            backoff = min(backoff, s.deferral_initial)
        wait = min(s.max_wait, max(backoff, outcome.wait or 0.0))
        now = self.clock()
        when = now + wait
        first = record.first_attempt_at or now
        if when - first > s.max_age:
            why = (
                f"the next attempt ({wait:.0f} s from now) would fall after the maximum age of "
                f"{s.max_age:.0f} s"
            )
            return self._fail(record, owner, ctx, hooks, outcome, why, attempt, base)
        reason = (
            f"{outcome.kind.value}: {outcome.describe()}; next attempt in {wait:.0f} s "
            f"({record.attempts}/{s.max_attempts} attempts used)"
        )
        t = attrs.evolve(
            base or Transition(),
            state=target,
            outcome=outcome,
            attempt=attempt,
            provider_state=ctx.state,
            next_at=when,
            reason=reason,
        )
        return self._set(record, owner, t)

    def _fail(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        outcome: Outcome | None,
        why: str,
        attempt: Attempt | None = None,
        base: Transition | None = None,
        next_step: str | None = None,
    ) -> Record:
        """End the round in ``failed`` (one transaction, with the last attempt), then tell
        the ``on_failure`` hooks."""
        last = f" (last: {outcome.describe()})" if outcome else ""
        step = next_step or f"`docrelay requeue {record.id}` sends it again"
        t = attrs.evolve(
            base or Transition(),
            state=DocState.FAILED,
            outcome=KEEP if outcome is None else outcome,
            attempt=attempt,
            next_at=None,
            failures=record.failures + 1,
            attempts=record.attempts,
            reason=f"{why}{last}; {step}",
        )
        rec = self._set(record, owner, t)
        self._on_failure(rec, ctx, hooks, outcome or Outcome(kind=OutcomeKind.RETRY, message=why))
        return rec
