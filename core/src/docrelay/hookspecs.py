"""The docrelay hook specifications.

Hooks are called with keyword arguments; an implementation may accept any subset of them.
Mark every implementation with ``@docrelay.hookimpl``. A plugin declares the hook API it was
written for: ``ProviderInfo(hook_api=2)`` in a provider plugin, a module attribute
``DOCRELAY_HOOK_API = 2`` in a middleware plugin (none: version 1). The host refuses a plugin
written for a version it does not speak, and a hook name it does not know.

*Provider hooks* are called only on the plugin of the document's own provider (and on the
built-in fallbacks): one provider never sees another provider's traffic. They are every hook
below except :func:`provider_info` (called on every plugin) and the :data:`MIDDLEWARE_HOOKS`
(:func:`prepare_headers`, :func:`on_failure`, :func:`on_state_change`,
:func:`on_exchange`), which are called on
the document's provider plugin and on every *middleware plugin* (a plugin that does not
implement :func:`provider_info`).

Much of a provider needs no hook: ``ProviderInfo`` declares its auth (:mod:`docrelay.auth`),
its idempotency header, its request-id header, its sandbox and its demo, and the core's
generic classification answers every status the provider's classifier leaves to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._context import Context
    from ._models import (
        DemoBatch,
        DocState,
        Document,
        HttpRequest,
        HttpResponse,
        Notification,
        Outcome,
        ProviderInfo,
        TransportError,
    )
    from .sandbox import Sandbox

__all__ = ["MIDDLEWARE_HOOKS", "hookimpl", "hookspec"]

PROJECT = "docrelay"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Hooks called on the document's provider plugin and on every middleware plugin.
MIDDLEWARE_HOOKS = frozenset({"prepare_headers", "on_failure", "on_state_change", "on_exchange"})


# ---------------------------------------------------------------------------------------------
# Declaration
# ---------------------------------------------------------------------------------------------


@hookspec
def provider_info() -> ProviderInfo:  # type: ignore[empty-body]
    """Declare the provider this plugin delivers to.

    Called once per plugin when the plugin host starts. A plugin that implements it is a
    *provider plugin* and answers the provider hooks for documents whose ``provider`` equals
    the returned name; a plugin that does not is a *middleware plugin*.

    :return: a :class:`docrelay.ProviderInfo` (environments, limits, capabilities, settings,
        auth, idempotency and request-id headers, sandbox, demo, ``hook_api``).

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def provider_sandbox() -> type[Sandbox] | None:
    """Return the :class:`docrelay.sandbox.Sandbox` subclass that imitates this provider.

    *Deprecated* since hook API 2: declare ``ProviderInfo(sandbox=...)`` instead (it wins
    over this hook). Called on the provider's plugin by ``docrelay sandbox NAME``,
    ``docrelay demo`` and the conformance kit.

    :return: the sandbox class; the first non-``None`` result wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch | None:
    """Return this provider's part of ``docrelay demo``.

    *Deprecated* since hook API 2: declare ``ProviderInfo(demo=callable)`` instead, called
    with the same two arguments (it wins over this hook).

    :param sandbox: the provider's running sandbox.
    :param webhook_url: the base URL of the demo's webhook receiver.

    Called on the provider's plugin with its running sandbox and the URL where the demo's
    webhook receiver listens (``{webhook_url}/{provider}/{secret}``). A provider that takes
    webhooks makes a secret for the run (``secrets.token_urlsafe()``), registers that URL
    with the sandbox, and returns the secret as the ``webhook_secret`` setting: the
    receiver takes no notification without it.

    :return: a :class:`docrelay.DemoBatch`; the first non-``None`` result wins.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def hold(document: Document, ctx: Context) -> str | None:
    """Decide whether *document* must wait for another document first.

    :param document: the document about to be sent.
    :param ctx: the provider's context (``ctx.find_documents``, ``ctx.get_document``).

    Called before every send of a document whose provider implements it (and again for held
    documents whenever another document of the same provider changes state).

    :return: a reason (``"waiting for order 4711 to be confirmed"``) to hold the document in
        state ``held``, or ``None`` to send it now. The first non-``None`` result wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def idempotency_key(document: Document, ctx: Context) -> str | None:
    """Return the key that makes a resend of this document revision safe.

    :param document: the document revision that needs a key.
    :param ctx: the provider's context (``ctx.previous_key``, ``ctx.previous_state``).

    Called once per document revision, before its first send; the key is stored before any
    request leaves and reused for every retry, after crashes and restarts. ``ctx.previous_key``
    and ``ctx.previous_state`` tell about the previous revision (a provider that wants the same
    transaction id for a corrected revision returns ``ctx.previous_key``). The built-in default
    is a UUID derived from provider, document id and revision.

    :return: the key; the first non-``None`` result wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def build_request(document: Document, ctx: Context) -> HttpRequest | None:
    """Build the HTTP request that delivers *document* (method, path, body, content type).

    :param document: the document to deliver.
    :param ctx: the provider's context, with ``ctx.key`` set and ``ctx.state`` loaded.

    Called for every send attempt, with ``ctx.key`` set and ``ctx.state`` loaded; a provider
    that declares ``ProviderInfo(reuse_request=True)`` is asked once per document revision,
    key and state (the core sends the same request again). Raise
    :class:`docrelay.DocumentError` to reject the document without sending it (a payload that
    cannot be valid).

    :return: a :class:`docrelay.HttpRequest`; the first non-``None`` result wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def auth_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str] | None:
    """Return the authentication headers of an outgoing request (provider hook).

    Only for auth that no :mod:`docrelay.auth` scheme declares: when the provider's plugin
    implements it, ``ProviderInfo.auth`` is not applied. Called for every send attempt, and
    for ``ctx.request(..., auth=True)``. Register secret values with ``ctx.secret()``
    (``ctx.token()`` does it for tokens); raise :class:`docrelay.OutcomeError`
    (``config_error``) for missing credentials.

    :param request: the request built by :func:`build_request` (or the auxiliary request).
    :param ctx: the provider's context.
    :return: the headers; the first non-``None`` result wins.

    .. versionadded:: 0.2
    """


@hookspec
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str] | None:
    """Add headers to an outgoing request: tracing, If-Match, a tenant header (middleware).

    Called for every send attempt on the provider's plugin and on every middleware plugin,
    after the auth headers; the declared idempotency header is set after it. Values that are
    secrets must be registered with ``ctx.secret()``; docrelay never stores header values.
    (Before hook API 2, provider plugins put their auth here; that still works.)

    :param request: the request built by :func:`build_request`, auth headers included.
    :param ctx: the document's provider context.
    :return: headers to merge into the request; results are merged in call order.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def classify_response(
    response: HttpResponse | None,
    error: TransportError | None,
    ctx: Context,
    document: Document | None,
) -> Outcome | None:
    """Turn the answer to a send into an :class:`docrelay.Outcome` (provider hook).

    Called by the engine after every send request, not for polls, reconciles or other
    ``ctx.request`` calls (those hooks classify their own answers, and may call
    :meth:`docrelay.Context.classify` to reach this hook and the generic classification).
    Answer only what is specific to the provider and return ``None`` for the rest: the
    core's generic classification then decides from the status (2xx delivered, 401
    ``reauth``, 403/404 ``config_error``, 409/413/4xx ``rejected``, 429 ``throttled``, 5xx
    ``retry``) and the transport error (``retry`` before sending, ``unknown`` when the
    request may have reached the provider). The core fills in what an outcome leaves empty:
    the status, the ``Retry-After`` wait of ``retry``/``throttled`` (capped) and the request
    id from ``ProviderInfo.request_id_header``. An exception here is logged and the generic
    answer is used. Transport errors of kind ``tls``, ``invalid_url``, ``invalid_request``
    and ``invalid_header`` never reach this hook: they are ``config_error`` for every
    provider.

    :param response: the provider's answer, or ``None`` when none came back.
    :param error: the transport error when no answer came back, else ``None``.
    :param ctx: the provider's context (``ctx.state`` may be updated).
    :param document: the document that was sent (``None`` when called outside a send).
    :return: the outcome, or ``None`` to leave it to the generic classification; the first
        non-``None`` result wins.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# After the send
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def refresh_resource(document: Document, ctx: Context) -> bool | None:
    """Re-read the provider's copy of the resource after a ``stale`` outcome (412).

    :param document: the document whose send was answered ``stale``.
    :param ctx: the provider's context (``ctx.state`` to update).

    Update ``ctx.state`` (for example the new ETag) so the next attempt can succeed.

    :return: ``True`` when the state was refreshed and one more attempt makes sense, ``False``
        when it cannot be; the first non-``None`` result wins.
    :raises OutcomeError: when the re-read decides the round: its outcome (for example
        ``rejected`` because the resource was changed at the provider since docrelay's last
        known version) ends the round as any classified answer would.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def reconcile(document: Document, ctx: Context) -> Outcome | None:
    """Look the document up at the provider after an ambiguous (``unknown``) outcome.

    :param document: the document whose previous send may have taken effect.
    :param ctx: the provider's context (``ctx.key`` is the key of that send).

    Called before resending a document whose previous request may have taken effect, for
    providers that do not deduplicate (``ProviderInfo.idempotency == "none"``), and for the
    others when they implement it.

    :return: an outcome when the provider has the document (``delivered``, ``duplicate``,
        ``no_action``, ``accepted`` or ``rejected``, with ``provider_ref``: it ends the
        round as a classified answer would), an outcome of kind ``retry`` when it certainly
        does not (send again), ``unknown`` when the provider cannot tell (the document is
        parked for a person), or ``None`` when the lookup is not possible. The first
        non-``None`` wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def poll_status(document: Document, ctx: Context) -> Outcome | None:
    """Ask the provider about an ``accepted`` document whose validation is asynchronous.

    :param document: the ``accepted`` document.
    :param ctx: the provider's context (``ctx.state`` as the send left it).

    Called for providers with ``async_validation == "poll"`` when the poll is due; the engine
    backs off between polls.

    :return: ``accepted`` (still running, with an optional ``wait``), ``delivered``,
        ``rejected`` (with the provider's results), or ``retry`` with ``resend=True`` when the
        provider lost the validation. The first non-``None`` result wins.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def parse_notification(
    body: bytes, headers: Mapping[str, str], ctx: Context
) -> Notification | None:
    """Turn a provider's webhook into a :class:`docrelay.Notification`.

    :param body: the request body as received.
    :param headers: the request headers.
    :param ctx: the provider's context (no document).

    Called by :meth:`docrelay.Relay.ingest_notification` and the webhook WSGI app. Raise
    :class:`ValueError` for a body that is not a notification of this provider.

    :return: the notification (outcome plus the key or provider reference that finds the
        document), or ``None`` for an event docrelay does not act on. First result wins.

    .. versionadded:: 0.1
    """


@hookspec
def on_failure(document: Document, outcome: Outcome, ctx: Context) -> None:
    """React to a failed delivery round (``rejected``, ``failed``, ``config_error``).

    :param document: the document whose round failed.
    :param outcome: the outcome that ended the round.
    :param ctx: the document's provider context.

    Called once per failed round on the provider's plugin and on every middleware plugin
    (report the error to the provider, notify someone). ``ctx.failures`` counts the rounds.
    Exceptions are logged and do not change the document's state.

    .. versionadded:: 0.1
    """


@hookspec
def on_state_change(
    document: Document, old: DocState, new: DocState, outcome: Outcome | None, ctx: Context
) -> None:
    """Observe every state change of every document (ERP write-back, metrics, audit).

    :param document: the document that changed.
    :param old: the state before (a :class:`docrelay.DocState`, equal to its string value).
    :param new: the state after.
    :param outcome: the outcome that caused the change, if any.
    :param ctx: the document's provider context (settings, ``ctx.state``).

    Called after the change is committed to the store, on the provider's plugin and on every
    middleware plugin. Exceptions are logged and do not change the document's state.

    .. versionadded:: 0.1
    """


@hookspec
def on_exchange(
    document: Document | None,
    request: HttpRequest,
    response: HttpResponse | None,
    error: TransportError | None,
    outcome: Outcome | None,
    elapsed: float,
    waited: float,
    attempt: int,
    purpose: str,
    ctx: Context,
) -> None:
    """Observe one HTTP exchange with a provider (tracing, metrics).

    :param document: the document the exchange was for.
    :param request: the request as it went out (headers included; secrets are masked in
        every log and record, not here: do not export header values).
    :param response: the answer, as the plugins see it (known secrets masked; a token
        endpoint's body left out); ``None`` when the exchange failed in transport.
    :param error: the transport error (refused, timed out, TLS...); ``None`` when an answer
        came. Exactly one of *response* and *error* is set.
    :param outcome: the classified outcome of the step the exchange belongs to; ``None``
        for ``token`` and ``refresh``, and when the step ended without one.
    :param elapsed: seconds the exchange took.
    :param waited: seconds spent waiting for the provider's rate limit before it.
    :param attempt: the document's send attempt number (the poll number for ``poll``).
    :param purpose: ``send`` (a delivery attempt), ``poll``, ``reconcile``, ``refresh``
        (the re-read after a 412) or ``token`` (a token fetch).
    :param ctx: the document's provider context.

    Called once per request that went out (or failed in transport), on the provider's
    plugin and on every middleware plugin, after the answer was classified. Exceptions are
    logged and do not change the document's state.

    .. versionadded:: 0.2
    """
