"""The context every hook receives: provider settings, state, tokens and safe HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._models import HttpRequest, HttpResponse, ProviderInfo, TransportError
from ._status import DocumentStatus

if TYPE_CHECKING:
    from ._models import Document, Outcome

__all__ = ["Context", "DocumentView", "Token", "TransportFailure"]


@attrs.frozen
class Token:
    """An access token and when it stops being valid (epoch seconds)."""

    value: str = attrs.field(repr=False)
    expires_at: float

    @classmethod
    def from_expires_in(cls, value: str, expires_in: float, now: float | None = None) -> Token:
        return cls(value=value, expires_at=(now if now is not None else time.time()) + expires_in)


class TransportFailure(Exception):
    """Raised by :meth:`Context.request` when no HTTP response came back."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(error.message)
        self.error = error


#: The name plugins used for another stored document: it is :class:`DocumentStatus`, the one
#: shape of a stored document (kept so that plugins written before it still import).
DocumentView = DocumentStatus


class _Services(Protocol):
    """What the engine lends a context (kept private: plugins use Context's methods)."""

    def http(self, ctx: Context, request: HttpRequest) -> HttpResponse: ...

    def token(self, ctx: Context, credential: str, fetch: Callable[[Context], Token]) -> str: ...

    def find_documents(
        self, provider: str, kind: str | None, metadata: Mapping[str, str]
    ) -> list[DocumentView]: ...

    def register_secret(self, value: str) -> None: ...

    def auth_headers(self, ctx: Context, request: HttpRequest) -> dict[str, str]: ...

    def get_document(self, provider: str, doc_id: str) -> DocumentView | None: ...

    def classify(
        self, ctx: Context, response: HttpResponse | None, error: TransportError | None
    ) -> Outcome: ...


@attrs.define
class Context:
    """Passed to every hook as ``ctx``.

    :ivar provider: the provider's :class:`ProviderInfo`.
    :ivar settings: the provider's resolved settings (secrets resolved from the environment;
        never log them).
    :ivar base_url: the base URL chosen by ``env`` or ``base_url``.
    :ivar key: the idempotency key of the document revision being delivered, once stored.
    :ivar previous_key: the key of the document's previous revision (``None`` on the first).
    :ivar previous_state: the state that previous revision ended in.
    :ivar attempt: the number of this send attempt for the current revision (1-based).
    :ivar failures: failed delivery rounds (rejected / failed) over the document's life.
    :ivar state: provider-specific state kept with the document across attempts, crashes
        and restarts (a proposal id, an ETag, a validation request id). Hooks may change it;
        the engine stores it with the attempt.
    """

    provider: ProviderInfo
    settings: Mapping[str, Any]
    base_url: str
    environment: str | None
    _services: _Services = attrs.field(repr=False, alias="services")
    key: str | None = None
    previous_key: str | None = None
    previous_state: str | None = None
    attempt: int = 0
    failures: int = 0
    state: dict[str, Any] = attrs.field(factory=dict)
    document: Document | None = None
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("docrelay"), repr=False)

    def setting(self, name: str, default: Any = None) -> Any:
        value = self.settings.get(name)
        return default if value is None else value

    def url(self, path: str) -> str:
        """An absolute URL for *path* on the provider's base URL."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        auth: bool = False,
    ) -> HttpResponse:
        """Make an auxiliary HTTP call (a token, a poll, a lookup) the engine's way.

        With ``auth=True`` the provider's auth headers (declared in ``ProviderInfo.auth`` or
        from the ``auth_headers`` hook) are added. Same session, timeouts and TLS settings as
        deliveries; raises
        :class:`TransportFailure` when no response comes back, and
        :class:`~docrelay.OutcomeError` (``config_error``) for a host outside the provider's
        configured ones or a certificate that does not verify.
        """
        request = HttpRequest(
            method=method, url=self.url(url), body=body, headers=headers or {}, params=params or {}
        )
        if auth:
            request = request.with_headers(self._services.auth_headers(self, request))
        return self._services.http(self, request)

    def auth_headers(self, request: HttpRequest | None = None) -> dict[str, str]:
        """The provider's auth headers (a token fetched when needed), secrets registered."""
        request = request or HttpRequest(method="GET", url=self.base_url)
        return self._services.auth_headers(self, request)

    def classify(
        self, response: HttpResponse | None, error: TransportError | None = None
    ) -> Outcome:
        """The outcome of an answer as a send's would be: the provider's ``classify_response``
        first, then the core's generic classification (for polls and lookups)."""
        return self._services.classify(self, response, error)

    def token(self, credential: str, fetch: Callable[[Context], Token]) -> str:
        """A cached access token for *credential*, fetched with *fetch* when missing or near
        expiry; one fetch at a time per credential. Its value is registered as a secret."""
        return self._services.token(self, credential, fetch)

    def find_documents(
        self, *, kind: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> list[DocumentView]:
        """Other documents of this provider, by kind and metadata (exact matches, filtered
        by the store's SQL)."""
        return self._services.find_documents(self.provider.name, kind, metadata or {})

    def get_document(self, doc_id: str) -> DocumentView | None:
        """Another document of this provider by its id (``None`` when there is none)."""
        return self._services.get_document(self.provider.name, doc_id)

    def secret(self, value: str) -> str:
        """Register *value* as a secret: it is redacted from logs, records and output."""
        self._services.register_secret(value)
        return value
