"""The services a provider's :class:`~docrelay.Context` reaches: HTTP through the engine,
tokens, other documents, secrets, classification."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._classify import DOCRELAY_TRANSPORT_FAULTS, classify_generic
from ._context import Context, Token, TransportFailure
from ._limits import token_key
from ._models import (
    HttpRequest,
    HttpResponse,
    Outcome,
    TransportError,
)
from ._parts import EngineParts
from ._redact import register_secret
from ._round import _Exchange, _scrubbed
from ._settings import ProviderRuntime
from ._status import DocumentStatus
from .exceptions import OutcomeError

__all__ = ["_Services"]


class _Services:
    """What one context borrows from the engine (and which tokens it used)."""

    def __init__(self, engine: EngineParts, runtime: ProviderRuntime) -> None:
        self.engine = engine
        self.runtime = runtime
        self.used_tokens: dict[str, str] = {}
        #: how many times a token was asked for (a build that asked is never reused, also
        #: when the token is one this context had used already)
        self.token_reads = 0
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
        self.token_reads += 1
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
