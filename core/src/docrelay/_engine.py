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
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping

import attrs
import stamina

from ._classify import DOCRELAY_TRANSPORT_FAULTS, classify_generic
from ._context import Context, Token, TransportFailure
from ._host import PluginHost, ProviderHooks
from ._leases import LeaseKeeper
from ._limits import RateLimiter, TokenCache, rate_bucket, token_key
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
from ._notify import overdue_reason
from ._redact import redact, redact_outcome, register_secret
from ._settings import EngineSettings, ProviderRuntime
from ._status import DocumentStatus
from ._store import KEEP, LeaseLost, Record, Store, Transition, process_identity
from ._transport import Transport
from .exceptions import ConfigError, DocumentError, OutcomeError

__all__ = ["Engine", "EngineSettings", "ProviderRuntime"]

log = logging.getLogger("docrelay.engine")

#: States an answer puts a document in that record a business effect at the provider.
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


class _Services:
    """What one context borrows from the engine (and which tokens it used)."""

    def __init__(self, engine: Engine, runtime: ProviderRuntime) -> None:
        self.engine = engine
        self.runtime = runtime
        self.used_tokens: dict[str, str] = {}
        self.fetching_token = False
        # What the plugin's requests are for (on_exchange), and the exchanges not yet told.
        self.purpose = "send"
        self.exchanges: list[_Exchange] = []

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse:
        purpose = "token" if self.fetching_token else self.purpose
        response, error = self.engine.http(
            self.runtime, request, exchanges=self.exchanges, purpose=purpose
        )
        if response is not None and not (self.fetching_token and 200 <= response.status < 300):
            # A token endpoint's good answer is the new token itself (and may be the token
            # this process already knows, so already registered as a secret): kept whole.
            response = _scrubbed(response)
        if error is not None and error.kind in DOCRELAY_TRANSPORT_FAULTS:
            # Not the provider's to judge, and not transient: a configuration error, also
            # when a plugin's token fetch or lookup would otherwise call it retryable.
            raise OutcomeError(classify_generic(None, error))
        if error is not None:
            raise TransportFailure(error)
        assert response is not None
        return response

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str:
        cred = f"{self.runtime.info.name}:{credential}"
        key = token_key(self.runtime)

        def fetching() -> Token:
            self.fetching_token = True
            try:
                return fetch(ctx)
            finally:
                self.fetching_token = False

        token = self.engine.tokens.get(cred, fetching, self.engine.clock, key=key)
        self.used_tokens[cred] = token.value
        return token.value

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[DocumentStatus]:
        return [
            DocumentStatus.from_record(r) for r in self.engine.store.find(provider, kind, metadata)
        ]

    def register_secret(self, value: str) -> None:
        register_secret(value)

    def auth_headers(self, ctx: Context, request: HttpRequest) -> dict[str, str]:
        return self.engine.host.hooks(self.runtime.info.name).auth_headers(request, ctx)

    def get_document(self, provider: str, doc_id: str) -> DocumentStatus | None:
        record = self.engine.store.get(doc_id)
        if record is None or record.provider != provider:
            return None
        return DocumentStatus.from_record(record)

    def classify(
        self, ctx: Context, response: HttpResponse | None, error: TransportError | None
    ) -> Outcome:
        hooks = self.engine.host.hooks(self.runtime.info.name)
        return hooks.classify_response(response, error, ctx, ctx.document)


class Engine:
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
        last: tuple[Outcome, Attempt | None] | None = None
        try:
            key = self._ensure_key(record, ctx, hooks)
        except DocumentError as exc:
            out = Outcome(kind=OutcomeKind.REJECTED, message=str(exc), rule="docrelay:key")
            return self._finish(record, owner, ctx, hooks, rt, out, None)
        try:
            for try_ in stamina.retry_context(
                on=_retry_hook,
                attempts=max(1, s.inprocess_attempts) + 2,  # + a token refresh, a re-read
                timeout=s.inprocess_timeout,
                wait_initial=s.retry_wait_initial,
                wait_max=s.retry_wait_max,
                wait_jitter=s.retry_wait_jitter,
            ):
                with try_:
                    if attempts >= s.max_attempts:
                        break
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
                                break
                            fresh = False
                        except TransportFailure as exc:
                            log.warning("re-reading %s after 412 failed: %s", doc.id, exc)
                            fresh = False
                        finally:
                            self._observe(hooks, ctx, None, "refresh")
                        if fresh:
                            raise _Again(outcome, 0.0)
                    elif kind in (OutcomeKind.RETRY, OutcomeKind.THROTTLED) or (
                        kind == OutcomeKind.UNKNOWN and rt.info.deduplicates
                    ):
                        wait = outcome.wait
                        if (wait is None or wait <= s.retry_after_cap) and (
                            attempts < s.max_attempts
                        ):
                            self._record(record, owner, ctx, attempt, attempts, first_attempt_at)
                            raise _Again(outcome, wait)
        except _Again:
            pass  # stamina gave up: the last outcome decides below
        assert last is not None or attempts >= s.max_attempts
        if last is None:
            return self._fail(record, owner, ctx, hooks, record.outcome, "attempt budget spent")
        outcome, last_attempt = last
        record = attrs.evolve(record, attempts=attempts, first_attempt_at=first_attempt_at)
        if outcome.kind == OutcomeKind.REAUTH:
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
            request = hooks.build_request(doc, ctx)
            if request is None:
                raise ConfigError(f"provider {rt.info.name} built no request for {doc.kind!r}")
            request = request.with_headers(hooks.auth_headers(request, ctx))
            request = request.with_headers(hooks.prepare_headers(request, ctx))
            if rt.info.idempotency_header:
                request = request.with_headers({rt.info.idempotency_header: key})
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

    # -- after the send -------------------------------------------------------------------------

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
        """Apply notifications that arrived before the send's answer was committed."""
        if rec.state != DocState.ACCEPTED:
            return rec
        for note_id, outcome in self.store.pending_notifications(rec.provider, rec.id):
            applied = self.apply_notification(rec, outcome)
            self.store.mark_notification(
                note_id, applied is not None, "applied late" if applied else "not applicable"
            )
            if applied is not None:
                return applied
        return rec

    def apply_notification(self, rec: Record, outcome: Outcome) -> Record | None:
        """Move an ``accepted`` document forward by a notification; ``None`` if it cannot
        move (already final, or still being sent: then it is applied when the send ends)."""
        if rec.state != DocState.ACCEPTED:
            return None
        if outcome.kind not in (OutcomeKind.DELIVERED, OutcomeKind.REJECTED, OutcomeKind.DUPLICATE):
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
