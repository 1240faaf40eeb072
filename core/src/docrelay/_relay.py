"""The library API for ERP connectors: :class:`Relay`."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._config import Config, check_plugin_names
from ._engine import Engine, EngineSettings, ProviderRuntime
from ._host import PluginHost, PluginStatus
from ._lifecycle import submission_refusal
from ._models import (
    FINAL_STATES,
    Attempt,
    DocState,
    Document,
    ProviderInfo,
)
from ._notify import WebhookRefused, WebhookSettings, check_secret
from ._records import storable_text
from ._redact import install_log_redaction, redact
from ._status import DocumentStatus
from ._store import Store, open_store
from .exceptions import ConfigError, DocumentError, NotFoundError, StoreError

__all__ = ["DocumentStatus", "IngestResult", "Relay", "SettleResult"]

log = logging.getLogger("docrelay")


@attrs.frozen
class IngestResult:
    """What became of one webhook: ``applied``, ``pending`` (the send is still finishing),
    ``duplicate``, ``already_final``, ``unknown_document`` or ``ignored``."""

    status: str
    doc_id: str | None = None
    state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


class SettleResult(list[DocumentStatus]):
    """What :meth:`Relay.run_until_settled` returns: a list of statuses that also says why
    the wait ended.

    :param settled: every document is final (delivered, duplicate, no_action, rejected or
        failed).
    :param timed_out: the timeout passed (or the next attempt is due after it) while some
        document was not final.

    Both false: the documents left are parked until someone acts (``docrelay why`` says how).
    """

    def __init__(
        self, statuses: Iterable[DocumentStatus], *, settled: bool = False, timed_out: bool = False
    ) -> None:
        super().__init__(statuses)
        self.settled = settled
        self.timed_out = timed_out

    @property
    def pending(self) -> list[DocumentStatus]:
        """The statuses that are not final."""
        return [s for s in self if not s.is_final]

    def __repr__(self) -> str:
        return (
            f"SettleResult({list.__repr__(self)}, settled={self.settled}, "
            f"timed_out={self.timed_out})"
        )


class Relay:
    """Submit documents, deliver them, and ask where they are.

    :param store: a store URL (``sqlite:///docrelay.db``, ``postgresql://...``) or a
        :class:`~docrelay.Store`.
    :param providers: settings per provider name (``base_url`` or ``env``, credentials,
        provider-specific keys). Values of secret settings are redacted everywhere.
    :param engine: :class:`EngineSettings` or a mapping of its fields.
    :param plugins: extra plugin objects (e.g. your ERP write-back middleware).
    :param autoload: load installed plugins from the ``docrelay.plugins`` entry points.
    :param webhooks: :class:`WebhookSettings` or a mapping of its fields (body limits, the
        cap on unmatched notifications, the per-source rate limit).
    :param insecure_webhooks: take notifications of providers that have no
        ``webhook_secret`` (anyone who can reach the receiver can then move documents):
        only for a receiver that nobody else can reach. Off by default.
    :param create_store: false: a SQLite store file that does not exist is a
        :class:`~docrelay.exceptions.StoreError`, not a new empty store (for readers).
    """

    def __init__(
        self,
        store: str | Store = "sqlite:///docrelay.db",
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        engine: EngineSettings | Mapping[str, Any] | None = None,
        *,
        plugins: Sequence[object] = (),
        autoload: bool = True,
        enabled: Iterable[str] | None = None,
        disabled: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        store_options: Mapping[str, Any] | None = None,
        host: PluginHost | None = None,
        webhooks: WebhookSettings | Mapping[str, Any] | None = None,
        insecure_webhooks: bool = False,
        create_store: bool = True,
    ) -> None:
        install_log_redaction()
        self.webhook_settings = (
            webhooks
            if isinstance(webhooks, WebhookSettings)
            else WebhookSettings.from_mapping(webhooks)
        )
        self.insecure_webhooks = bool(insecure_webhooks)
        self.host = host or PluginHost(
            autoload=autoload, enabled=enabled, disabled=disabled, plugins=plugins
        )
        settings = (
            engine
            if isinstance(engine, EngineSettings)
            else EngineSettings.from_mapping(engine or {})
        )
        runtimes = {
            name: ProviderRuntime.build(self.host.provider(name), cfg, settings)
            for name, cfg in (providers or {}).items()
        }
        if isinstance(store, str) and not create_store:
            _require_existing_store(store)
        self.store = (
            store if isinstance(store, Store) else open_store(store, **dict(store_options or {}))
        )
        self.engine = Engine(self.host, self.store, runtimes, settings, clock=clock)
        self._configured: tuple[str, ...] = tuple(providers or ())
        self.clock = clock
        self._wsgi: Callable[..., Any] | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        create_store: bool = True,
        needs: Iterable[str] = (),
        **kwargs: Any,
    ) -> Relay:
        """A relay as ``docrelay.toml`` describes it (refuses inline secrets, unknown plugin
        names and settings of the wrong type or out of range: :class:`ConfigError`).

        A configured provider whose ``${VAR}`` is not set, or whose plugin did not load, does
        not stop the relay: reading the store works, and using that provider
        (:meth:`require`, delivering its documents) raises the :class:`ConfigError`.
        Providers in *needs* must be usable: their error is raised before the store is
        opened. With *create_store* false, a SQLite store file that does not exist is an
        error (:class:`~docrelay.exceptions.StoreError`), not a new empty store."""
        check_plugin_names("[plugins] enabled", config.plugins_enabled or ())
        check_plugin_names("[plugins] disabled", config.plugins_disabled)
        host = PluginHost(
            enabled=config.plugins_enabled,
            disabled=config.plugins_disabled,
            plugins=kwargs.get("plugins", ()),
        )
        unavailable = dict(config.unresolved)
        broken = {s.name: s.error for s in host.statuses() if s.status == "error"}
        for name, settings in config.providers.items():
            if name in broken and name not in host.providers:
                unavailable[name] = f"provider {name}: its plugin did not load: {broken[name]}"
                continue
            info = host.provider(name)
            refs = config.references.get(name, frozenset())
            for s in info.settings:
                if s.secret and settings.get(s.name) and s.name not in refs:
                    raise ConfigError(
                        f"provider {name}: setting {s.name!r} is a secret: give it as a "
                        f"${{ENV_VAR}} reference, not inline"
                    )
        for name in needs:
            if name in unavailable:
                raise ConfigError(unavailable[name])
        kwargs.pop("plugins", None)
        relay = cls(
            store=config.store_url,
            providers={k: v for k, v in config.providers.items() if k not in unavailable},
            engine=config.engine,
            store_options=config.store_options,
            host=host,
            webhooks=kwargs.pop("webhooks", config.webhooks),
            create_store=create_store,
            **kwargs,
        )
        relay.engine.unavailable.update(unavailable)
        relay._configured = tuple(config.providers)
        return relay

    # -- providers ------------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[str, ...]:
        """The names of the configured providers, usable or not (see :meth:`require`)."""
        return self._configured

    def require(self, provider: str) -> ProviderInfo:
        """*provider*'s description, when it can deliver; else :class:`ConfigError` (an
        unset ``${VAR}``, a plugin that did not load, an unknown name)."""
        self.engine.runtime(provider)
        return self.host.provider(provider)

    def provider_info(self, provider: str) -> ProviderInfo:
        """*provider*'s description (no secret needed)."""
        return self.host.provider(provider)

    def payload_limit(self, provider: str) -> int:
        """The largest payload *provider* takes, in bytes."""
        rt = self.engine.runtime(provider)
        return rt.max_payload_bytes or self.engine.settings.max_payload_bytes

    def webhook_providers(self) -> list[str]:
        """Configured providers that take notifications (webhook validation or a
        ``parse_notification`` hook)."""
        return [
            name
            for name in self.providers
            if self.host.provider(name).async_validation == "webhook"
            or self.host.hooks(name).implements("parse_notification")
        ]

    @property
    def max_attempts(self) -> int:
        return self.engine.settings.max_attempts

    # -- documents ------------------------------------------------------------------------------

    def check(self, document: Document) -> None:
        """Refuse a document that cannot be delivered as it is (:class:`DocumentError`): an
        empty payload, one over the provider's size limit (``[engine] max_payload_bytes``
        when the provider declares none), a kind the provider does not take, or a payload
        that is not the JSON or XML the provider takes (:attr:`ProviderInfo.content_type`;
        the provider setting ``check_payload = false`` lets empty and malformed payloads
        through to delivery, which rejects them)."""
        info = self.host.provider(document.provider)
        rt = self.engine.runtime(document.provider)
        size = len(document.payload)
        # check_payload = false stores such a payload: delivery rejects it (and a plugin's
        # on_failure may report it to the provider, as Procuros asks).
        check_payload = rt.settings.get("check_payload") is not False
        if check_payload and not document.payload.strip():
            raise DocumentError(f"document {document.id!r} is empty")
        limit = rt.max_payload_bytes or self.engine.settings.max_payload_bytes
        if size > limit:
            raise DocumentError(
                f"document {document.id!r} is {size} bytes, over the "
                f"{info.name} limit of {limit} bytes"
            )
        if info.kinds and document.kind not in info.kinds:
            raise DocumentError(
                f"document {document.id!r}: {info.name} takes kinds "
                f"{', '.join(info.kinds)}, not {document.kind!r}"
            )
        for k, v in document.metadata.items():
            if storable_text(k) != k or storable_text(v) != v:
                # No text column takes it (PostgreSQL's jsonb refuses its \u0000, and then
                # every metadata lookup of the store fails).
                raise DocumentError(
                    f"document {document.id!r}: metadata {k!r} holds a NUL or a lone "
                    "surrogate (not storable text)"
                )
        problem = (
            _payload_problem(info.name, info.content_type, document) if check_payload else None
        )
        if problem is not None:
            raise DocumentError(f"document {document.id!r}: {problem}")

    def precheck(self, document: Document) -> None:
        """Raise :class:`DocumentError` if :meth:`submit` would refuse *document* (checks
        the provider's limits and the stored document it would replace)."""
        self.check(document)
        refusal = submission_refusal(self.store.get(document.id), document)
        if refusal is not None:
            raise DocumentError(refusal)

    def submit(self, document: Document, *, connection: Any = None) -> DocumentStatus:
        """Store *document* for delivery (or a corrected revision of a known one); a document
        :meth:`check` refuses raises :class:`DocumentError` and is not stored.

        With *connection* (the ERP's own psycopg 3 or ``sqlite3`` connection to the store's
        database, in its open transaction), the document is written in that transaction and
        docrelay commits nothing: the ERP's commit makes it visible to the workers, its
        rollback leaves no trace (the transactional outbox, see the how-to "Outbox")."""
        self.check(document)
        if connection is not None:
            from . import _outbox

            rec = _outbox.submit(self.store, connection, document, self.clock())
            return DocumentStatus.from_record(rec)
        rec, _ = self.store.submit(document, self.clock())
        return DocumentStatus.from_record(rec)

    def submit_many(self, documents: Sequence[Document], *, connection: Any = None) -> int:
        """Store many new documents in one transaction (bulk enqueue): all or nothing. Every
        document is checked first; one that :meth:`check` refuses, an id given twice or an id
        already stored raises :class:`DocumentError` and none is stored. With *connection*,
        in the caller's transaction, as :meth:`submit`."""
        seen: set[str] = set()
        for d in documents:
            if d.id in seen:
                raise DocumentError(f"document id {d.id!r} is given twice")
            seen.add(d.id)
            self.check(d)
        if connection is not None:
            from . import _outbox

            return _outbox.submit_many(self.store, connection, documents, self.clock())
        return self.store.submit_many(documents, self.clock())

    def status(self, doc_id: str) -> DocumentStatus:
        """Where *doc_id* is, and why (:class:`NotFoundError` for an unknown id)."""
        rec = self.store.get(doc_id)
        if rec is None:
            raise NotFoundError(f"no document {doc_id!r}")
        return DocumentStatus.from_record(rec)

    def statuses(
        self,
        ids: Sequence[str] | None = None,
        state: str | None = None,
        provider: str | None = None,
    ) -> list[DocumentStatus]:
        return [
            DocumentStatus.from_record(r)
            for r in self.store.select(
                ids=ids, states=[state] if state else None, provider=provider
            )
        ]

    def counts(self, statuses: Iterable[DocumentStatus] | None = None) -> dict[str, dict[str, int]]:
        """Documents per provider and state (of *statuses*, else of the whole store)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.statuses() if statuses is None else statuses:
            per = out.setdefault(s.provider, {})
            per[s.state.value] = per.get(s.state.value, 0) + 1
        return out

    def notifications(self, doc_id: str) -> list[dict[str, Any]]:
        """The notifications stored for *doc_id* (newest last)."""
        return self.store.notifications(doc_id)

    def explain(self, doc_id: str) -> dict[str, Any]:
        """The timeline of one document, and what happens next (``docrelay why``)."""
        s = self.status(doc_id)
        paused = self.paused().get(s.provider)
        if s.state in (DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION):
            next_step = "none: it is final and will never be sent again"
        elif s.state == DocState.REJECTED:
            next_step = "correct the document and submit it again (a new revision, a new round)"
        elif s.state == DocState.FAILED:
            next_step = f"fix the cause, then `docrelay requeue {doc_id}`"
        elif paused:
            next_step = f"provider paused ({paused[0]}); `docrelay requeue {doc_id}` resumes it"
        elif s.next_attempt_at is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.next_attempt_at))
            what = "poll" if s.state == DocState.ACCEPTED else "attempt"
            next_step = f"next {what} at {when} UTC"
        else:
            next_step = s.reason or "waiting"
        return {
            "status": s.to_dict(),
            "budget": {"attempts_used": s.attempts, "max_attempts": self.max_attempts},
            "next_step": next_step,
            "timeline": [
                {
                    "number": a.number,
                    "at": a.started_at,
                    "action": a.action,
                    "request": a.request,
                    "status": a.status,
                    "outcome": a.outcome.to_dict() if a.outcome else None,
                    "duration": a.duration,
                    "key": a.key,
                }
                for a in self.history(doc_id)
            ],
            "notifications": self.notifications(doc_id),
        }

    def history(self, doc_id: str) -> list[Attempt]:
        if self.store.get(doc_id) is None:
            raise NotFoundError(f"no document {doc_id!r}")
        return self.store.history(doc_id)

    def requeue(self, doc_id: str) -> DocumentStatus:
        """Send a ``failed``, ``rejected``, ``held`` or ``unknown`` document again (same key),
        and lift a pause of its provider."""
        return DocumentStatus.from_record(self.store.requeue(doc_id, self.clock()))

    def requeue_many(self, doc_ids: Iterable[str]) -> list[DocumentStatus]:
        """:meth:`requeue` each of *doc_ids*, in order; the first that cannot be requeued
        raises (the ones before it stay requeued)."""
        return [self.requeue(i) for i in doc_ids]

    def plugins(self) -> list[PluginStatus]:
        return self.host.statuses()

    def paused(self) -> dict[str, tuple[str, float | None]]:
        return self.store.paused(self.clock())

    # -- delivery -------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[DocumentStatus, str, str], None]) -> None:
        """Call *listener(status, old, new)* after every committed state change (*status*
        is the document as it is after the change; *old* and *new* are state values)."""
        self.engine.listeners.append(
            lambda rec, old, new: listener(DocumentStatus.from_record(rec), old, new)
        )

    def next_due(self, provider: str | None = None) -> float | None:
        """When the earliest document is due (``None``: nothing waits)."""
        return self.store.next_due(provider)

    def run_until_idle(
        self,
        workers: int = 1,
        provider: str | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Deliver until no document is due now (or *stop* is set: the batches in hand are
        finished first); returns how many claims were processed."""
        total = 0
        while stop is None or not stop.is_set():
            total += self._run_workers(workers, provider, stop)
            due = self.store.next_due(provider)
            if due is None or due > self.clock():
                break
        return total

    def _run_workers(self, workers: int, provider: str | None, stop: threading.Event | None) -> int:
        counts = [0] * max(1, workers)

        def work(i: int) -> None:
            while (stop is None or not stop.is_set()) and (k := self.engine.run_once(provider)) > 0:
                counts[i] += k

        if workers <= 1:
            work(0)
            return counts[0]
        threads = [
            threading.Thread(target=work, args=(i,), name=f"docrelay-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)

    def run_until_settled(
        self, timeout: float = 60.0, workers: int = 1, provider: str | None = None
    ) -> SettleResult:
        """Deliver until every document is final, or *timeout* seconds passed.

        Waits for everything that answers by itself: in-process and deferred retries,
        throttling, polls of accepted documents (EBH) and webhooks for accepted documents
        (AQI: the notification must reach this store, through :attr:`wsgi_app` or
        :meth:`ingest_notification`, from any thread or process).

        Returns a :class:`SettleResult`: the statuses of every document (of *provider*, when
        given), with ``settled`` true when all of them are final and ``timed_out`` true
        when the timeout passed first. It returns early,
        with both false, when nothing can move without you: the remaining documents are
        parked (``unknown`` with no next step, a provider paused until a requeue); and early,
        with ``timed_out`` true, when the next attempt is due after the timeout and no answer
        is awaited.
        """
        deadline = time.monotonic() + timeout
        open_states = [s.value for s in DocState if s not in FINAL_STATES]
        while True:
            self.run_until_idle(workers, provider)
            pending = self.store.select(states=open_states, provider=provider)
            if not pending:
                return SettleResult(self.statuses(provider=provider), settled=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return SettleResult(self.statuses(provider=provider), timed_out=True)
            now = self.clock()
            paused = self.store.paused(now)
            awaited = False  # an answer may arrive at any moment (a webhook)
            due: float | None = None
            for r in pending:
                when = r.next_attempt_at
                if r.provider in paused:
                    until = paused[r.provider][1]
                    when = None if until is None else max(until, when or until)
                elif r.state == DocState.ACCEPTED:
                    awaited = True
                if when is not None:
                    due = when if due is None else min(due, when)
            if not awaited and due is None:
                return SettleResult(self.statuses(provider=provider))
            if not awaited and due is not None and due - now > remaining:
                return SettleResult(self.statuses(provider=provider), timed_out=True)
            wait = 0.05 if due is None else max(0.0, due - now)
            if awaited:
                wait = min(wait, 0.05)
            time.sleep(min(wait, 0.5, max(0.0, remaining)) + 0.001)

    def run_forever(
        self,
        workers: int = 1,
        provider: str | None = None,
        stop: threading.Event | None = None,
        idle_sleep: float = 1.0,
    ) -> None:
        """Deliver until *stop* is set, sleeping while nothing is due. A set *stop* is seen
        between batches, so a busy worker stops within one batch (SIGTERM for the CLI)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.run_until_idle(workers, provider, stop)
            due = self.store.next_due(provider)
            wait = idle_sleep if due is None else min(idle_sleep, max(0.0, due - self.clock()))
            stop.wait(wait)

    # -- notifications --------------------------------------------------------------------------

    def webhook_secret(self, provider: str) -> str | None:
        return self.engine.runtime(provider).webhook_secret

    def check_webhook(self, provider: str, secret: str | None) -> None:
        """Raise :class:`WebhookRefused` unless *secret* is *provider*'s ``webhook_secret``
        (403), or the provider has none and the relay takes insecure webhooks (else 503). A
        provider that is installed but not configured raises :class:`ConfigError`."""
        check_secret(provider, self.webhook_secret(provider), secret, self.insecure_webhooks)

    def queue_depth(self) -> dict[str, dict[str, int]]:
        """Documents per provider and state, read from the store (``/metrics`` shows it)."""
        out: dict[str, dict[str, int]] = {}
        for (provider, state), n in sorted(self.store.depth().items()):
            out.setdefault(provider, {})[state] = n
        return out

    def notification_stats(self) -> dict[str, dict[str, int]]:
        """Per provider: notifications ``stored``, ``unmatched`` ones among them, and
        unmatched ones ``dropped`` (the oldest, to keep within ``max_unmatched_per_provider``)."""
        return self.store.notification_stats()

    def ingest_notification(
        self,
        provider: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        secret: str | None = None,
    ) -> IngestResult:
        """Apply a provider's webhook. *secret* is the one the request gave (the URL path
        segment): it must match the provider's ``webhook_secret``, else
        :class:`WebhookRefused` (and nothing is stored). Bodies over the limits raise
        :class:`WebhookRefused` (413); malformed bodies raise :class:`ValueError`; a
        notification for an unknown document is recorded (bounded), never lost; duplicates
        within one delivery round and out-of-order notifications change nothing."""
        self.check_webhook(provider, secret)
        limits = self.webhook_settings
        if len(body) > limits.max_body_bytes:
            raise WebhookRefused(f"body over {limits.max_body_bytes} bytes", 413)
        rt = self.engine.runtime(provider)
        hooks = self.host.hooks(provider)
        ctx = self.engine.context(rt)
        notification = hooks.parse_notification(body, dict(headers or {}), ctx)
        digest = hashlib.sha256(body).hexdigest()
        # Redacted before the store cuts it: a cut secret no longer matches its pattern.
        kept = redact(body.decode("utf-8", "replace")).encode()
        now = self.clock()
        unmatched: dict[str, Any] = {
            "stored_body_limit": limits.stored_unmatched_body_bytes,
            "max_unmatched": limits.max_unmatched_per_provider,
        }
        if notification is None:
            if len(body) > limits.max_unmatched_body_bytes:
                raise WebhookRefused(
                    f"ignored notification over {limits.max_unmatched_body_bytes} bytes", 413
                )
            self.store.record_notification(
                provider, digest, None, None, None, None, kept, now, **unmatched
            )
            return IngestResult("ignored")
        rec = None
        if notification.key:
            rec = self.store.find_by_key(provider, notification.key)
        if rec is None and notification.provider_ref:
            rec = self.store.find_by_ref(provider, notification.provider_ref)
        if rec is None and len(body) > limits.max_unmatched_body_bytes:
            raise WebhookRefused(
                f"notification for no known document over {limits.max_unmatched_body_bytes} bytes",
                413,
            )
        # For an earlier revision: recorded as not applicable at once, never for a moment
        # among the current round's waiting answers (another ingest would apply it there).
        stale = rec is not None and bool(notification.key) and rec.key != notification.key
        # Record first, then look at the state: a send finishing meanwhile applies it.
        new = self.store.record_notification(
            provider,
            digest,
            rec.id if rec else None,
            notification.key,
            notification.provider_ref,
            notification.outcome,
            kept,
            now,
            **(unmatched if rec is None else {"max_per_document": limits.max_settled_per_document}),
            not_applied="for an earlier revision" if stale else None,
        )
        if not new:
            return IngestResult("duplicate", rec.id if rec else None)
        if rec is None:
            log.warning(
                "%s notification for an unknown document (key %s, ref %s) recorded",
                provider,
                notification.key,
                notification.provider_ref,
            )
            return IngestResult("unknown_document")
        if stale:
            return IngestResult("stale", rec.id, rec.state.value)
        rec = self.store.get(rec.id) or rec
        if rec.state == DocState.ACCEPTED:
            # The round's answers apply in the order they came: one that arrived while the
            # send was finishing (and still waits for the send's end to apply it) goes before
            # this one, never overtaken by it (this one is among the waiting, the latest).
            out, moved = self.engine.apply_waiting(rec, "applied")
            if moved and not self.store.pending_notifications(provider, rec.id):
                return IngestResult("applied", rec.id, out.state.value)
            # Else an earlier answer of the round decided (this one came after it), or the
            # document moved meanwhile.
            rec = self.store.get(rec.id) or rec
        if rec.state in FINAL_STATES:
            self._mark_waiting(provider, rec.id, f"already {rec.state.value}")
            return IngestResult("already_final", rec.id, rec.state.value)
        return IngestResult("pending", rec.id, rec.state.value)

    def _mark_waiting(self, provider: str, doc_id: str, note: str) -> None:
        """Mark every answer of the round that still waits not applicable (*note*): the
        document is final. Every one, not only the latest: two ingests at once both read
        both waiting ones, and marking "the latest" each left the other waiting for ever
        (never dropped by the cap). One applied meanwhile by the ingest or send that moved
        the document (read here while it still waited) is left as it is."""
        for note_id, _ in self.store.pending_notifications(provider, doc_id):
            self.store.mark_notification(note_id, False, note, if_waiting=True)

    @property
    def wsgi_app(self) -> Callable[..., Any]:
        """The webhook receiver as a WSGI app (``POST /webhooks/<provider>``)."""
        if self._wsgi is None:
            from ._wsgi import make_wsgi_app  # werkzeug: only for the webhook server

            self._wsgi = make_wsgi_app(self, max_body=self.webhook_settings.max_body_bytes)
        return self._wsgi

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Relay store={redact(getattr(self.store, 'url', '?'))!r}>"


def _require_existing_store(url: str) -> None:
    """Refuse to open a SQLite store file that is not there (read-only commands must not
    create one in the wrong directory)."""
    if not url.startswith("sqlite://"):
        return
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:" or Path(path).exists():
        return
    if not Path(path).parent.exists():
        raise StoreError(f"store directory {str(Path(path).parent)!r} does not exist")
    raise StoreError(
        f"no store at {path!r} ([store] url {redact(url)!r}): nothing sent yet, or the "
        "wrong directory or configuration (--config, DOCRELAY_CONFIG)"
    )


def _payload_problem(provider: str, content_type: str | None, document: Document) -> str | None:
    """Why *document*'s payload is not what *provider* takes: JSON or XML, as the plugin
    declares with :attr:`ProviderInfo.content_type` (``None``: any bytes)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            json.loads(document.payload)
        except (ValueError, RecursionError):
            return f"{provider} takes JSON ({media}); the payload is not JSON"
    elif media in ("application/xml", "text/xml") or media.endswith("+xml"):
        error = _xml_error(document.payload)
        if error is not None:
            return f"{provider} takes XML ({media}); the payload is not XML ({error})"
    return None


def _xml_error(payload: bytes) -> str | None:
    """Why *payload* is not well-formed XML (``None`` when it is). Entity declarations are
    refused rather than expanded."""
    from xml.parsers import expat

    parser = expat.ParserCreate()

    def no_entities(*_args: object) -> None:
        raise ValueError("entity declarations are not accepted")

    parser.EntityDeclHandler = no_entities
    try:
        parser.Parse(payload, True)
    except expat.ExpatError as exc:
        return expat.errors.messages[exc.code] if exc.code else str(exc)
    except ValueError as exc:
        return str(exc)
    return None
