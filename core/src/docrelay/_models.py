"""Value objects: documents, requests, responses, outcomes, attempts, provider info."""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "FINAL_STATES",
    "HOOK_API",
    "SUCCESS_OUTCOMES",
    "SUPPORTED_HOOK_APIS",
    "Attempt",
    "DemoBatch",
    "DocState",
    "Document",
    "FieldError",
    "HttpRequest",
    "HttpResponse",
    "Notification",
    "Outcome",
    "OutcomeKind",
    "ProviderInfo",
    "RateLimit",
    "Setting",
    "TransportError",
]

#: Largest response body kept in memory and in the store (bytes).
MAX_BODY_BYTES = 64 * 1024

_DOC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _str_mapping(value: Mapping[str, Any] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (value or {}).items()})


class OutcomeKind(enum.StrEnum):
    """What one response (or transport error) means for the document.

    The classifier's whole vocabulary; every response maps to exactly one.
    """

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    NO_ACTION = "no_action"
    ACCEPTED = "accepted"
    RETRY = "retry"
    THROTTLED = "throttled"
    REAUTH = "reauth"
    STALE = "stale"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    CONFIG_ERROR = "config_error"


#: Outcomes after which a document is never sent again.
SUCCESS_OUTCOMES = frozenset({OutcomeKind.DELIVERED, OutcomeKind.DUPLICATE, OutcomeKind.NO_ACTION})


class DocState(enum.StrEnum):
    """Where a document is in its life (see docs/architecture.md for the diagram)."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    NO_ACTION = "no_action"
    ACCEPTED = "accepted"
    RETRY_WAIT = "retry_wait"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    HELD = "held"
    FAILED = "failed"


#: States that end a document revision's life (until a requeue or a new revision).
FINAL_STATES = frozenset(
    {
        DocState.DELIVERED,
        DocState.DUPLICATE,
        DocState.NO_ACTION,
        DocState.REJECTED,
        DocState.FAILED,
    }
)

#: States the command line counts as success (exit code 0).
OK_STATES = frozenset(
    {DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION, DocState.ACCEPTED}
)


def validate_document_id(doc_id: str) -> str:
    """Return *doc_id* or raise :class:`ValueError` with a one-line reason."""
    if not isinstance(doc_id, str) or not _DOC_ID_RE.fullmatch(doc_id):
        raise ValueError(
            f"invalid document id {doc_id!r}: use 1-200 characters of letters, digits, "
            "'.', '_', ':' or '-', starting with a letter or digit"
        )
    return doc_id


@attrs.frozen
class Document:
    """One business document for one provider.

    ``revision`` is derived from the content: the same bytes, kind, content type and
    metadata always give the same revision, a corrected document a new one.
    """

    id: str = attrs.field(validator=lambda _i, _a, v: validate_document_id(v))
    provider: str
    payload: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")
    kind: str = "document"
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_str_mapping)

    @functools.cached_property
    def revision(self) -> str:
        """A digest of kind, content type, metadata and payload (computed once; a document
        read from a store carries the revision stored with it, not hashed again)."""
        h = hashlib.sha256()
        h.update(self.kind.encode() + b"\0" + self.content_type.encode() + b"\0")
        h.update(json.dumps(dict(sorted(self.metadata.items()))).encode() + b"\0")
        h.update(self.payload)
        return h.hexdigest()[:20]

    def text(self, encoding: str = "utf-8") -> str:
        """The payload decoded as text (replacement characters for bad bytes)."""
        return self.payload.decode(encoding, errors="replace")

    def json(self) -> Any:
        """The payload parsed as JSON (raises :class:`ValueError` if it is not)."""
        return json.loads(self.payload)


@attrs.frozen
class Setting:
    """A provider-specific configuration key, declared in :class:`ProviderInfo`."""

    name: str
    default: Any = None
    help: str = ""
    secret: bool = False
    required: bool = False
    #: The value's type, checked when the configuration loads: ``"str"``, ``"int"``,
    #: ``"number"`` (finite), ``"bool"``, ``"list"`` or ``"any"``. ``None``: inferred from
    #: ``default`` (``bool``, ``int``, ``float``, ``str``, ``list``/``tuple``; ``any`` when the
    #: default is ``None``). A secret is always a string that is not empty or blank.
    type: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            attrs.validators.in_({"str", "int", "number", "bool", "list", "any"})
        ),
    )
    #: The values allowed (empty: any value of the type).
    choices: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    #: Inclusive bounds for ``int`` and ``number`` settings.
    minimum: float | None = None
    maximum: float | None = None


@attrs.frozen
class RateLimit:
    """At most ``requests`` per ``per_seconds`` for one provider credential."""

    requests: int
    per_seconds: float

    @property
    def interval(self) -> float:
        return self.per_seconds / self.requests


#: The hook API this docrelay speaks: a plugin declares the one it was written for
#: (``ProviderInfo.hook_api``, or ``DOCRELAY_HOOK_API`` in a middleware plugin's module).
#: 1: the original hooks (auth in ``prepare_headers``); 2: declared auth, ``auth_headers``,
#: the document in ``classify_response``, ``ctx`` in ``on_state_change``, sandbox and demo
#: in ``ProviderInfo``.
HOOK_API = 2
#: The hook API versions the plugin host loads.
SUPPORTED_HOOK_APIS = frozenset({1, 2})


def _auth(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_REFERENCE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _reference(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A lazy reference is ``"package.module:name"`` (the entry-point spelling)."""
    if isinstance(value, str) and not _REFERENCE.fullmatch(value):
        raise ValueError(
            f"ProviderInfo {attribute.alias}={value!r}: give the object or 'module:attr'"
        )


def _resolve(value: object, provider: str, what: str) -> Any:
    """*value* itself, or the object a ``"module:attr"`` reference names (imported now)."""
    if not isinstance(value, str):
        return value
    import importlib

    module, _, name = value.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        # An ImportError (the plugin host makes it a ConfigError: one line on the CLI).
        raise ImportError(
            f"provider {provider}: its {what} {value!r} cannot be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return obj


@attrs.frozen
class ProviderInfo:
    """What a provider plugin declares about its provider.

    :param idempotency: how a resend is made safe: ``"key"`` (the provider deduplicates on a
        key docrelay sends), ``"payload"`` (the provider recognises a payload it already has),
        or ``"none"`` (no deduplication: an ambiguous outcome is reconciled before resending).
    :param async_validation: ``"none"``, ``"poll"`` (``poll_status``) or ``"webhook"``
        (``parse_notification``).
    :param auth: how requests are authenticated: a :mod:`docrelay.auth` scheme or a tuple
        of them (the core adds the headers, fetches and caches tokens, registers secrets).
        *Deprecated*: a string (``"api_key"``...) declares nothing; such plugins add their
        auth in ``prepare_headers``.
    :param idempotency_header: the header that carries the idempotency key on every send
        (``"Idempotency-Key"``); set by the core after every other header.
    :param request_id_header: the response header with the provider's request id, kept in
        the outcome when the classifier does not set one.
    :param reuse_request: ``build_request`` gives the same request for the same document
        revision, key, settings and ``ctx.state`` (it reads nothing else: no clock, no
        attempt number): docrelay then reuses the request it built for an in-process retry
        or a later resend of that revision instead of calling the hook again (auth and
        ``prepare_headers`` still run for every attempt). Only a build that made no request,
        used no token and changed no state is reused.
    :param hook_api: the hook API version the plugin was written for (``2`` today; see
        :doc:`/plugins/hooks`).
    :param sandbox: the :class:`docrelay.sandbox.Sandbox` subclass imitating the provider,
        or a reference to it, ``"docrelay_acme.sandbox:AcmeSandbox"``, imported only where a
        sandbox is needed (``docrelay sandbox``, ``docrelay demo``, the contract kit), so that
        loading the plugin to send does not import the sandbox and what it uses. Reading
        :attr:`sandbox` gives the class either way.
    :param demo: ``demo(sandbox, webhook_url) -> DemoBatch``: the provider's part of
        ``docrelay demo`` (see the ``demo_batch`` hook for the arguments); or a
        ``"module:attr"`` reference to it, imported by ``docrelay demo`` only.
    :param title: *deprecated*, unused.
    :param docs_url: *deprecated*, unused.
    """

    name: str
    title: str = ""
    environments: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    default_environment: str = ""
    auth: Any = attrs.field(default="none", converter=_auth)
    kinds: tuple[str, ...] = ("document",)
    max_payload_bytes: int | None = None
    rate_limit: RateLimit | None = None
    idempotency: str = attrs.field(
        default="key", validator=attrs.validators.in_({"key", "payload", "none"})
    )
    async_validation: str = attrs.field(
        default="none", validator=attrs.validators.in_({"none", "poll", "webhook"})
    )
    settings: tuple[Setting, ...] = ()
    #: The setting that identifies one credential (rate limits and tokens are per credential).
    credential_setting: str | None = None
    docs_url: str | None = None
    #: Hosts besides the base URL's that auxiliary calls may reach (identity servers).
    extra_hosts: tuple[str, ...] = ()
    #: Whom the rate limit is counted for. ``"credential"``: each credential has its own
    #: budget. ``"host"``: one budget for the provider's host, shared by all credentials (a
    #: limit per connecting IP). The setting ``rate_limit_scope`` overrides it.
    rate_limit_scope: str = attrs.field(
        default="credential", validator=attrs.validators.in_({"host", "credential"})
    )
    #: The media type documents' payloads must be in (``application/json``,
    #: ``application/xml``; ``+json``/``+xml`` types too). A payload that does not parse as
    #: it is refused when it is submitted. ``None``: any bytes.
    content_type: str | None = None
    idempotency_header: str | None = None
    request_id_header: str | None = None
    hook_api: int = 1
    reuse_request: bool = False
    #: ``sandbox`` as the plugin gave it: the class, or ``"module:attr"`` (imported only by
    #: :attr:`sandbox`, so that loading the plugin does not import its sandbox).
    sandbox_ref: type[Any] | str | None = attrs.field(
        default=None, eq=False, alias="sandbox", validator=_reference
    )
    #: ``demo`` as the plugin gave it: the callable, or ``"module:attr"``.
    demo_ref: Any = attrs.field(default=None, eq=False, alias="demo", validator=_reference)

    @property
    def sandbox(self) -> type[Any] | None:
        """The sandbox class (a ``"module:attr"`` reference is imported here, at first use)."""
        resolved: type[Any] | None = _resolve(self.sandbox_ref, self.name, "sandbox")
        return resolved

    @property
    def demo(self) -> Any:
        """The demo callable (a ``"module:attr"`` reference is imported here, at first use)."""
        return _resolve(self.demo_ref, self.name, "demo")

    @property
    def deduplicates(self) -> bool:
        return self.idempotency in {"key", "payload"}

    def setting(self, name: str) -> Setting | None:
        for s in self.settings:
            if s.name == name:
                return s
        return None


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (value or {}).items()})


@attrs.frozen
class HttpRequest:
    """The request a provider plugin builds; ``url`` is absolute or relative to the base URL."""

    method: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    params: Mapping[str, str] = attrs.field(factory=dict, converter=_str_mapping)

    def with_headers(self, extra: Mapping[str, str]) -> HttpRequest:
        merged = dict(self.headers)
        merged.update(extra)
        return attrs.evolve(self, headers=merged)

    def summary(self) -> str:
        """Method and URL, never header values or the body (safe to store and show)."""
        return f"{self.method} {self.url}"


@attrs.frozen
class HttpResponse:
    """A provider's answer, with the body capped at :data:`MAX_BODY_BYTES`."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    body: bytes = b""
    url: str = ""
    elapsed: float = 0.0
    truncated: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return default

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is empty, truncated or not JSON."""
        if not self.body or self.truncated:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    def text(self, limit: int = 2000) -> str:
        return self.body[:limit].decode("utf-8", errors="replace")


@attrs.frozen
class TransportError:
    """A request that got no HTTP response.

    ``sent`` tells whether the request may have reached the provider (a read timeout, a
    connection reset after the body went out): then the outcome is ``unknown``.
    """

    kind: str  # "connect", "connect_timeout", "read_timeout", "disconnected", "other"
    message: str
    sent: bool


@attrs.frozen
class FieldError:
    """One field-level error as the provider reported it."""

    field: str | None
    message: str
    value: str | None = None
    severity: str | None = None
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # ``field`` is always kept (also as None): from_dict needs it back.
        return {k: v for k, v in attrs.asdict(self).items() if v is not None or k == "field"}


def _field_errors(value: Any) -> tuple[FieldError, ...]:
    out = []
    for item in value or ():
        if isinstance(item, FieldError):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(FieldError(**item))
        else:
            out.append(FieldError(field=None, message=str(item)))
    return tuple(out)


@attrs.frozen
class Outcome:
    """The meaning of one response, keeping the provider's own words.

    :param wait: seconds the provider asked for (Retry-After) or the classifier suggests.
    :param provider_ref: the provider's id for the document (transaction id, request id).
    :param provider_status: a status to write back to the ERP (Procuros ``TRANSMITTED``).
    :param resend: for a ``retry`` found while polling: the whole document must be sent again.
    :param rule: which classifier rule matched (shown by ``docrelay why``).
    """

    kind: OutcomeKind = attrs.field(converter=OutcomeKind)
    status: int | None = None
    message: str | None = None
    field_errors: tuple[FieldError, ...] = attrs.field(default=(), converter=_field_errors)
    error_url: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    wait: float | None = None
    provider_ref: str | None = None
    provider_status: str | None = None
    resend: bool = False
    rule: str | None = None

    @property
    def is_success(self) -> bool:
        return self.kind in SUCCESS_OUTCOMES

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        data = dict(data)
        data["field_errors"] = [
            FieldError(**{"field": None, **fe}) for fe in data.get("field_errors") or ()
        ]
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for a in attrs.fields(Outcome):
            if a.name in {"kind", "field_errors"}:
                continue
            v = getattr(self, a.name)
            if v is not None and v is not False:
                out[a.name] = v
        if self.field_errors:
            out["field_errors"] = [fe.to_dict() for fe in self.field_errors]
        return out

    def describe(self) -> str:
        """One line for tables and logs."""
        parts = [self.kind.value]
        if self.status is not None:
            parts.append(str(self.status))
        if self.message:
            parts.append(self.message)
        if self.field_errors:
            parts.append(
                "; ".join(
                    f"{fe.field}: {fe.message}" if fe.field else fe.message
                    for fe in self.field_errors[:5]
                )
                + (f" (+{len(self.field_errors) - 5} more)" if len(self.field_errors) > 5 else "")
            )
        return " ".join(parts)


@attrs.frozen
class Attempt:
    """One recorded attempt (a send, a poll, a reconcile or a notification)."""

    doc_id: str
    number: int
    revision: str
    key: str | None
    action: str  # "send", "poll", "reconcile", "notification", "refresh"
    started_at: float
    request: str | None = None
    status: int | None = None
    outcome: Outcome | None = None
    duration: float | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None


@attrs.frozen
class Notification:
    """A provider's webhook, turned into a status update for a document.

    The document is found by ``key`` (the idempotency key docrelay sent, such as AQI's
    transactionId) or by ``provider_ref``.
    """

    outcome: Outcome
    key: str | None = None
    provider_ref: str | None = None
    event: str | None = None


@attrs.frozen
class DemoBatch:
    """What a provider plugin contributes to ``docrelay demo``.

    :param settings: provider settings for a relay against the running sandbox.
    :param documents: the sample documents, submitted in order.
    :param faults: fault specs switched on in the sandbox before delivery starts.
    :param expect: *deprecated*, unused: outcomes the batch is meant to show.
    """

    settings: Mapping[str, Any] = attrs.field(converter=_frozen_mapping)
    documents: tuple[Document, ...] = attrs.field(converter=tuple[Document, ...])
    faults: tuple[str, ...] = attrs.field(default=(), converter=tuple[str, ...])
    expect: tuple[str, ...] = attrs.field(default=(), converter=tuple[str, ...])


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date); ``None`` if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - now)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds
