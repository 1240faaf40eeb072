"""The delivery engine: claim, key, send, classify, retry, transition.

One document's round, as :meth:`Engine.process` runs it::

    claim (lease) ─► held? ─► key + intent stored ─► build request ─► headers ─► rate slot
        ─► send ─► classify ─► in-process retry (stamina) or transition ─► hooks

Invariants (each has a test): the key and the intent are committed before any request
leaves; a revision never goes out under another key; a delivered, duplicate or no_action
document is never sent again; a crash anywhere leaves the document due again when its lease
expires, and it is then resent with the same key, reconciled, or already final.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import attrs

from ._batch import _Batching
from ._context import Context
from ._delivery import _Delivering
from ._followup import _FollowingUp
from ._host import PluginHost, ProviderHooks
from ._leases import LeaseKeeper
from ._limits import RateLimiter, TokenCache, rate_bucket
from ._logging import bind_document, unbind_document
from ._models import (
    FINAL_STATES,
    Attempt,
    DocState,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    TransportError,
)
from ._redact import redact
from ._round import (
    _EVIDENCE,
    _BuiltRequests,
    _crashpoint,
    _Exchange,
    _Pending,
    _Prepared,
    _scrubbed,
)
from ._services import _Services
from ._settings import EngineSettings, ProviderRuntime
from ._store import KEEP, LeaseLost, Record, Store, Transition, process_identity
from ._transport import Transport
from .exceptions import ConfigError

__all__ = ["Engine", "EngineSettings", "ProviderRuntime"]

log = logging.getLogger("docrelay.engine")

#: States an answer puts a document in that record a business effect at the provider.


class Engine(_Batching, _Delivering, _FollowingUp):
    """Delivers documents from a :class:`Store` through the plugins of a :class:`PluginHost`."""

    def __init__(
        self,
        host: PluginHost,
        store: Store,
        providers: Mapping[str, ProviderRuntime],
        settings: EngineSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.store = store
        self.providers = dict(providers)
        self.settings = settings
        self.clock = clock
        self.tokens = TokenCache(store)
        self.limiter = RateLimiter(store, settings.rate_margin)
        self.transport = Transport(settings.request_deadline)
        self.leases = LeaseKeeper(store, settings.lease_seconds, clock)
        self.owner_prefix = f"{process_identity()}:{uuid.uuid4().hex[:6]}"
        self.listeners: list[Callable[[Record, str, str], None]] = []
        #: Configured providers that cannot be used, and why (an unset ``${VAR}``, a plugin
        #: that did not load): reading the store works, delivering for them raises.
        self.unavailable: dict[str, str] = {}
        #: per worker thread: ``pending``, the settled answers of its batch (see run_once)
        self._local = threading.local()
        #: requests built per document revision (providers with ``reuse_request``)
        self.built = _BuiltRequests()

    # -- plumbing -------------------------------------------------------------------------------

    def owner(self) -> str:
        return f"{self.owner_prefix}:{threading.get_ident()}"

    def runtime(self, provider: str) -> ProviderRuntime:
        if provider in self.unavailable:
            raise ConfigError(self.unavailable[provider])
        rt = self.providers.get(provider)
        if rt is None:
            info = self.host.provider(provider)
            rt = self.providers[provider] = ProviderRuntime.build(info, {}, self.settings)
        return rt

    def http(
        self,
        rt: ProviderRuntime,
        request: HttpRequest,
        lease: tuple[str, str] | None = None,
        *,
        exchanges: list[_Exchange] | None = None,
        purpose: str = "send",
        scrub: bool = False,
    ) -> tuple[HttpResponse | None, TransportError | None]:
        """Every request to a provider goes out here, and takes its rate slot here.

        With *lease* (document id, owner), the document's lease is renewed right before the
        request leaves, after the rate-limit wait: a worker that was stopped past its lease
        (SIGSTOP, a paused VM) and whose document another worker took over gets
        :class:`LeaseLost` instead of sending it again.

        With *exchanges*, the exchange is appended there, for :meth:`_observe` to tell the
        ``on_exchange`` hooks once its step's outcome is known. With *scrub*, the answer is
        returned with known secrets masked (masked once, for both)."""
        begun = time.monotonic()
        bucket = rate_bucket(rt, request.url)
        if bucket is not None and rt.rate is not None:
            self.limiter.wait(bucket, rt.rate, self.clock)
        waited = time.monotonic() - begun
        if lease is not None:
            self.leases.renew(lease[0], lease[1])
        sent = time.monotonic()
        response, error = self.transport.send(rt, request)
        clean = (
            None
            if response is None or not (scrub or exchanges is not None)
            else _scrubbed(response)
        )
        if exchanges is not None:
            elapsed = time.monotonic() - sent
            # What observers see: known secrets masked; a token endpoint's body left out.
            seen = clean
            if seen is not None and purpose == "token":
                seen = attrs.evolve(seen, body=b"")
            exchanges.append(_Exchange(purpose, request, seen, error, elapsed, waited))
        return (clean if scrub else response), error

    def _observe(
        self,
        hooks: ProviderHooks,
        ctx: Context,
        outcome: Outcome | None,
        purpose: str,
        attempt: int | None = None,
    ) -> None:
        """Tell the ``on_exchange`` hooks about the exchanges of the step that just ended
        (*outcome* goes to the exchanges of *purpose*). Never raises: an observer cannot
        change a document's state."""
        services: _Services = ctx._services  # type: ignore[assignment]
        pending, services.exchanges = services.exchanges, []
        services.purpose = "send"
        for ex in pending:
            try:
                hooks.on_exchange(
                    document=ctx.document,
                    request=ex.request,
                    response=ex.response,
                    error=ex.error,
                    outcome=outcome if ex.purpose == purpose else None,
                    elapsed=ex.elapsed,
                    waited=ex.waited,
                    attempt=ctx.attempt if attempt is None else attempt,
                    purpose=ex.purpose,
                    ctx=ctx,
                )
            except Exception:
                log.exception("on_exchange of %s raised", ctx.provider.name)

    def context(self, rt: ProviderRuntime, record: Record | None = None) -> Context:
        ctx = Context(
            provider=rt.info,
            settings=rt.settings,
            base_url=rt.base_url,
            environment=rt.environment,
            services=_Services(self, rt),
        )
        if record is not None:
            ctx.document = record.document
            ctx.key = record.key if record.key_revision == record.document.revision else None
            ctx.previous_key = record.previous_key
            ctx.previous_state = record.previous_state
            ctx.attempt = record.attempts
            ctx.failures = record.failures
            ctx.state = dict(record.provider_state)
        return ctx

    # -- the round ------------------------------------------------------------------------------

    def run_once(self, provider: str | None = None, limit: int | None = None) -> int:
        """Claim one batch of due documents and process it; returns how many were claimed.

        Group commit: the first pass builds the request of every document that is simply due
        for a send and stores their intents (key, attempt, lease kept) in ONE transaction
        before any of the batch's requests leaves; the answers that settle a round are kept
        and stored together in ONE transaction once the batch's last request is answered
        (no request waits on a commit), and only then are hooks told and leases let go. A
        crash before that transaction leaves the documents ``sending`` with their key: they
        are resent with the same key or reconciled (only providers that deduplicate or
        reconcile are grouped; the others keep one intent and one outcome per document)."""
        owner = self.owner()
        lease = self.settings.lease_seconds
        claimed_at = self.clock()
        records = self.store.claim(
            owner,
            claimed_at,
            lease,
            limit or self.settings.batch_size,
            provider,
        )
        if not records:
            return 0
        paused: set[str] = set()
        # The whole batch's leases stay alive while its documents wait their turn and while
        # each is worked on (answers that drip, rate-limit slots, in-process retries).
        self.leases.hold(owner, [r.id for r in records], claimed_at + lease)
        plans = self._prepare_batch(records, owner)
        pending: list[_Pending] = []
        self._local.pending = pending
        try:
            for record in records:
                try:
                    if record.provider in paused:
                        # A config error earlier in this batch paused the provider.
                        self._unsend(record, owner, plans.get(record.id))
                        continue
                    done = self.process(record, owner, plans.get(record.id))
                    if done.outcome is not None and done.outcome.kind == OutcomeKind.CONFIG_ERROR:
                        paused.add(record.provider)
                except LeaseLost:
                    log.warning("lease on %s lost; another worker has it", record.id)
                except Exception as exc:
                    log.exception("unexpected error delivering %s", record.id)
                    self._internal_error(record, owner, exc)
                finally:
                    if not pending or pending[-1].record.id != record.id:
                        self.leases.release(record.id)
                    unbind_document()
        finally:
            self._local.pending = None
            try:
                self._flush(pending)
            finally:
                for p in pending:
                    self.leases.release(p.record.id)
        return len(records)

    def _internal_error(self, record: Record, owner: str, exc: Exception) -> None:
        """A bug escaped the round: record it as an attempt that counts against the budget,
        so the document ends in a final state with the reason instead of going round for
        ever. A document whose intent was stored may have been sent: ``unknown`` (looked up
        or resent with the same key), never a blind resend."""
        try:
            current = self.store.get(record.id)
            if current is None or current.lease_owner != owner:
                return
            rt = self.runtime(record.provider)
            hooks = self.host.hooks(record.provider)
            ctx = self.context(rt, current)
            what = redact(f"{type(exc).__name__}: {exc}")[:300]
            outcome = Outcome(
                kind=OutcomeKind.RETRY, message=f"internal error: {what}", rule="docrelay:internal"
            )
            attempts = current.attempts + 1
            attempt = Attempt(
                doc_id=record.id,
                number=self.store.next_attempt_number(record.id),
                revision=record.document.revision,
                key=current.key,
                action="internal",
                started_at=self.clock(),
                outcome=outcome,
            )
            current = attrs.evolve(
                current,
                attempts=attempts,
                first_attempt_at=current.first_attempt_at or attempt.started_at,
            )
            base = Transition(attempts=attempts, first_attempt_at=current.first_attempt_at)
            if attempts >= self.settings.max_attempts:
                why = f"internal error in {attempts} attempts ({what})"
                self._fail(current, owner, ctx, hooks, outcome, why, attempt, base)
                return
            if current.state == DocState.ACCEPTED:
                # The provider has the document (a poll or a hold check broke): never send
                # it again; look again later, within the budget, keeping its outcome.
                wait = min(self.settings.max_wait, self.settings.deferral_initial)
                reason = (
                    f"accepted; internal error while checking on it ({what}); "
                    f"checked again in {wait:.0f} s"
                )
                t = attrs.evolve(base, next_at=self.clock() + wait, reason=reason, attempt=attempt)
                self._set(current, owner, t, quiet=True)
                return
            target = (
                DocState.UNKNOWN
                if current.state in (DocState.SENDING, DocState.UNKNOWN)
                else DocState.RETRY_WAIT
            )
            self._defer(current, owner, ctx, hooks, outcome, attempt, target, base)
        except Exception:
            log.exception("could not record the internal error of %s", record.id)
            self._release(record, owner, "internal error; retried after the lease")

    def _release(
        self, record: Record, owner: str, reason: str | None, delay: float | None = None
    ) -> None:
        wait = self.settings.deferral_initial if delay is None else delay
        t = Transition(next_at=self.clock() + wait, reason=KEEP if reason is None else reason)
        try:
            self._set(record, owner, t, quiet=True)
        except Exception:
            log.exception("could not release %s", record.id)

    def process(self, record: Record, owner: str, plan: _Prepared | None = None) -> Record:
        bind_document(record.id, record.provider)
        rt = self.runtime(record.provider)
        hooks = self.host.hooks(record.provider)
        ctx = self.context(rt, record) if plan is None else plan.ctx
        now = self.clock()
        state = record.state
        if rt.settings.get("enabled") is False:
            why = f"provider {rt.info.name} is disabled in the configuration"
            return self._set(record, owner, Transition(next_at=None, reason=why))
        if state == DocState.ACCEPTED:
            return self._poll(record, owner, ctx, hooks, rt)
        if state in FINAL_STATES:
            # Never sent again: clear a stray lease and stop.
            return self._set(record, owner, Transition(next_at=None), quiet=True)
        if record.first_attempt_at and now - record.first_attempt_at > self.settings.max_age:
            return self._fail(record, owner, ctx, hooks, record.outcome, "time budget spent")
        if plan is None and hooks.implements("hold"):
            # (a plan's document was asked in the batch's first pass, and not held)
            reason = hooks.hold(record.document, ctx)
            if reason:
                when = now + self.settings.held_recheck
                t = Transition(state=DocState.HELD, reason=reason, next_at=when)
                return self._set(record, owner, t)
        if state in (DocState.SENDING, DocState.UNKNOWN):
            # The previous request may have taken effect: look it up or resend with the key.
            resolved = self._resolve_unknown(record, owner, ctx, hooks, rt)
            if resolved is not None:
                return resolved
        return self._deliver(record, owner, ctx, hooks, rt, plan)

    # -- after the send -------------------------------------------------------------------------

    def _set(
        self,
        record: Record,
        owner: str | None,
        t: Transition,
        *,
        expect_state: str | None = None,
        quiet: bool = False,
    ) -> Record:
        """The one transition function: apply *t* (which releases the lease unless it says
        otherwise) in one write, and return the record as stored, without reading it back.

        A state change is told to the hooks and listeners, and a lost lease rescues the
        round's answer. *quiet*: a write within the round (the intent, an in-process retry,
        a lookup, a release) that is no round's end."""
        now = self.clock()
        if quiet:
            self.store.apply(record.id, owner, t, now, expect_state=expect_state)
            return t.applied(record, now)
        _crashpoint("before_commit")
        try:
            self.store.apply(record.id, owner, t, now, expect_state=expect_state)
        except LeaseLost:
            if owner is not None and t.attempt is not None:
                self._rescue(record, t)
            raise
        rec = t.applied(record, now)
        if rec.state != record.state:
            outcome = None if t.outcome is KEEP else t.outcome
            self._changed(rec, record.state.value, rec.state.value, outcome)
        return rec

    def _rescue(self, record: Record, t: Transition) -> None:
        """The lease ran out before this round's result was stored (the process stalled past
        it). The provider's answer may be the only record of a business effect, so it is kept:
        the attempt goes into the history, and a delivery, rejection or acceptance moves the
        document when no other worker holds it now. Another worker sending meanwhile resends
        with the same key, and the provider recognises it."""
        assert t.attempt is not None
        log.warning(
            "lease on %s ran out before its %s result was stored; keeping the answer",
            record.id,
            t.state.value if t.state is not KEEP else record.state.value,
        )
        try:
            number = self.store.next_attempt_number(record.id)
            kept = Transition(attempt=attrs.evolve(t.attempt, number=number), release=False)
            self.store.apply(record.id, None, kept, self.clock())
            if t.state not in _EVIDENCE:
                return
            current = self.store.get(record.id)
            if (
                current is None
                or current.state in FINAL_STATES
                or current.document.revision != record.document.revision
            ):
                return
            late = attrs.evolve(t, attempt=None, release=False)
            self.store.apply(record.id, None, late, self.clock(), expect_state=current.state.value)
        except LeaseLost:
            pass  # another worker holds it right now: its resend meets the provider's record
        except Exception:
            log.exception("could not keep the late answer for %s", record.id)

    def _changed(self, rec: Record, old: str, new: str, outcome: Outcome | None) -> None:
        if old == new:
            return
        if rec.state in FINAL_STATES or rec.state == DocState.ACCEPTED:
            self.built.drop(rec.id)  # never sent again (this revision)
        try:
            ctx = self.context(self.runtime(rec.provider), rec)
            self.host.hooks(rec.provider).on_state_change(rec.document, old, new, outcome, ctx)
        except Exception:
            log.exception("on_state_change of %s raised for %s", rec.provider, rec.id)
        for listener in list(self.listeners):
            try:
                listener(rec, old, new)
            except Exception:
                log.exception("state listener raised")

    def _on_failure(
        self, rec: Record, ctx: Context, hooks: ProviderHooks, outcome: Outcome
    ) -> None:
        ctx.failures = rec.failures
        try:
            hooks.on_failure(rec.document, outcome, ctx)
        except Exception:
            log.exception("on_failure of %s raised for %s", rec.provider, rec.id)

    # -- asynchronous validation ----------------------------------------------------------------
