"""docrelay provider plugin for the eConnect Procurement Service Bus (PSB) API.

Sends UBL 2.1 invoices, credit notes and orders to ``POST /api/v1/{partyId}/salesInvoice/send``
(``purchaseOrder/send`` for orders) with an OAuth2 client-credentials bearer token and a
``X-EConnect-DocumentId`` per document revision, so that a resend after a lost answer is
answered ``409 Conflict`` (already processed) instead of delivering the invoice twice.
The core fetches, caches and refreshes the token and sets the documentId header (declared in
:func:`provider_info`); this module builds the request and checks the documentId rule.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import docrelay
from docrelay import (
    Context,
    Document,
    DocumentError,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    Setting,
    TransportError,
)
from docrelay.auth import ApiKeyHeader, OAuth2ClientCredentials

from ._classify import NAME, classify
from ._ubl import is_valid_document_id, peek_document_id, read_ubl

if TYPE_CHECKING:
    from ._demo import demo_batch
    from .sandbox import EConnectSandbox as EConnectSandbox

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DOCUMENT_ID_HEADER",
    "NAME",
    "build_request",
    "checked_document_id",
    "classify_response",
    "demo_batch",
    "provider_info",
]

#: Assumption (no public limit found): eConnect answers 413 above some size; 10 MiB here.
DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
DOCUMENT_ID_HEADER = "X-EConnect-DocumentId"
DEFAULT_SEND_PATH = "/api/v1/{party_id}/salesInvoice/send"
DEFAULT_ORDER_SEND_PATH = "/api/v1/{party_id}/purchaseOrder/send"

#: The PSB of each environment, and its identity server (providers.md 1.1).
ENVIRONMENTS = {
    "sandbox": "http://127.0.0.1:8701",
    "acceptance": "https://accp-psb.econnect.eu",
    "production": "https://psb.econnect.eu",
}
TOKEN_URLS = {
    "acceptance": "https://accp-identity.econnect.eu/connect/token",
    "production": "https://identity.econnect.eu/connect/token",
}

#: A client-credentials token from the environment's identity server (``{base_url}/connect/
#: token`` elsewhere: the sandbox, a proxy), form-encoded with ``scope=ap`` (providers.md 1.2);
#: the legacy ``Subscription-Key`` header only when the setting is set.
AUTH = (
    OAuth2ClientCredentials(
        token_urls=TOKEN_URLS,
        token_path="/connect/token",  # noqa: S106 - a path
        scope="ap",
        scope_setting="scope",
        body="form",
    ),
    ApiKeyHeader("Subscription-Key", "subscription_key", optional=True),
)

#: Document kinds and the setting holding their send path (with its default).
_KIND_PATHS: Mapping[str, tuple[str, str]] = {
    "invoice": ("send_path", DEFAULT_SEND_PATH),
    "credit_note": ("send_path", DEFAULT_SEND_PATH),
    "order": ("order_send_path", DEFAULT_ORDER_SEND_PATH),
}

SETTINGS = (
    Setting("client_id", help="OAuth2 client id of the application (from eConnect).",
            required=True),
    Setting("client_secret", help="OAuth2 client secret.", secret=True, required=True),
    Setting("party_id", help="The sending party id, e.g. NL:KVK:12345678 (metadata "
            "'party_id' overrides it per document).", required=True),
    Setting("token_url", type="str", help="OAuth2 token endpoint. Default: the identity "
            "server of the acceptance or production PSB, else {base_url}/connect/token."),
    Setting("scope", default="ap", help="OAuth2 scope requested with the token."),
    Setting("send_path", default=DEFAULT_SEND_PATH,
            help="Path template for invoices and credit notes ({party_id} is URL-quoted)."),
    Setting("order_send_path", default=DEFAULT_ORDER_SEND_PATH,
            help="Path template for orders ({party_id} is URL-quoted)."),
    Setting("content_type", default="application/xml", help="How the UBL travels: "
            "'application/xml' (raw body) or 'multipart/form-data' (one file part)."),
    Setting("subscription_key", secret=True,
            help="Legacy Subscription-Key header (optional; no longer required by the PSB API)."),
    Setting("max_payload_bytes", default=DEFAULT_MAX_PAYLOAD_BYTES,
            help="Largest document sent; larger ones are refused before sending (assumed 10 MiB)."),
)  # fmt: skip


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    """The PSB: environments, OAuth2 client credentials, the documentId header, settings."""
    return ProviderInfo(
        name=NAME,
        hook_api=2,
        content_type="application/xml",
        environments=ENVIRONMENTS,
        default_environment="acceptance",
        auth=AUTH,
        extra_hosts=tuple(urllib.parse.urlsplit(u).hostname or "" for u in TOKEN_URLS.values()),
        kinds=tuple(_KIND_PATHS),
        max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
        idempotency="key",
        idempotency_header=DOCUMENT_ID_HEADER,  # set by the core last: nobody overwrites it
        request_id_header="X-Request-Id",
        settings=SETTINGS,
        credential_setting="client_id",
        sandbox="docrelay_econnect.sandbox:EConnectSandbox",
        demo="docrelay_econnect._demo:demo_batch",
    )


def checked_document_id(ctx: Context) -> str:
    """The ``X-EConnect-DocumentId`` to send: the document revision's idempotency key.

    Whatever produced it (docrelay's default UUID, another plugin's ``idempotency_key``, a
    key stored by an earlier version), it must follow eConnect's rule (letters, digits and
    ``-``, at least six): else :class:`DocumentError`, so nothing is sent.
    """
    key = ctx.key
    if not key:
        raise DocumentError(
            f"refused before sending: no {DOCUMENT_ID_HEADER} (idempotency key) for this document"
        )
    problem = is_valid_document_id(key)
    if problem is not None:
        raise DocumentError(
            f"refused before sending: {DOCUMENT_ID_HEADER} {key!r} is invalid: it {problem}"
        )
    return key


def _path(document: Document, ctx: Context) -> str:
    if document.kind not in _KIND_PATHS:  # the path depends on the kind
        raise DocumentError(
            f"eConnect cannot send documents of kind {document.kind!r} "
            f"(kinds: {', '.join(_KIND_PATHS)})"
        )
    party = document.metadata.get("party_id") or str(ctx.setting("party_id"))
    setting, default = _KIND_PATHS[document.kind]
    try:
        return str(ctx.setting(setting, default)).format(
            party_id=urllib.parse.quote(party, safe=":")
        )
    except (KeyError, IndexError, ValueError):
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.CONFIG_ERROR,
                message=f"eConnect setting {setting} is not a valid template (only {{party_id}})",
                rule=f"econnect:setting-{setting}",
            )
        ) from None


def _same_id(number: str, key: str) -> bool:
    return number.strip().casefold() == key.strip().casefold()


def _multipart(payload: bytes, filename: str, boundary: str) -> tuple[bytes, str]:
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        "Content-Type: application/xml\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + payload + tail, f"multipart/form-data; boundary={boundary}"


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest:
    """``POST`` the UBL (raw or as one multipart file) to the kind's send path."""
    limit = int(ctx.setting("max_payload_bytes") or DEFAULT_MAX_PAYLOAD_BYTES)
    if len(document.payload) > limit:
        raise DocumentError(
            f"document is {len(document.payload)} bytes, over the eConnect limit of "
            f"{limit} bytes (setting max_payload_bytes)"
        )
    path = _path(document, ctx)
    key = checked_document_id(ctx)
    mode = str(ctx.setting("content_type", "application/xml")).strip()
    multipart = mode.lower().startswith("multipart/form-data")
    # The invoice number, read up to its cbc:ID only (near the top). Where the answer
    # depends on it (the number is the key, or names the multipart file), the whole document
    # is parsed: not well-formed XML further on has no number, as before.
    number = peek_document_id(document.payload)
    if number is not None and (multipart or _same_id(number, key)):
        number = read_ubl(document.payload).id
    if number is not None and _same_id(number, key):
        raise DocumentError(
            f"refused before sending: {DOCUMENT_ID_HEADER} must not be the invoice number "
            f"({number!r}): eConnect cannot tell a corrected resend from a duplicate then"
        )
    names = {"receiver_id": "receiverId", "channel": "channel"}
    params = {param: document.metadata[m] for m, param in names.items() if document.metadata.get(m)}
    body, content_type = document.payload, mode
    if multipart:
        body, content_type = _multipart(
            document.payload, f"{number or document.id}.xml", "docrelay-" + key.replace("-", "")
        )
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    return HttpRequest(method="POST", url=path, body=body, headers=headers, params=params)


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    """eConnect's own answers (:mod:`._classify`); ``None`` leaves the rest (401, 429, 5xx,
    transport errors) to docrelay's generic classification."""
    return classify(response, document_id=ctx.key) if response is not None else None


#: Imported at first use, not when the plugin is loaded to send (the sandbox, and what it
#: pulls in, is needed only by ``docrelay sandbox``, ``docrelay demo`` and the contract kit).
_LAZY = {"demo_batch": "._demo", "EConnectSandbox": ".sandbox"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
