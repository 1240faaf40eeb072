"""docrelay provider plugin for the eConnect Procurement Service Bus (PSB) API.

Sends UBL 2.1 invoices, credit notes and orders to ``POST /api/v1/{partyId}/salesInvoice/send``
(``purchaseOrder/send`` for orders) with an OAuth2 client-credentials bearer token and a
``X-EConnect-DocumentId`` per document revision, so that a resend after a lost answer is
answered ``409 Conflict`` (already processed) instead of delivering the invoice twice.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import docrelay
from docrelay import (
    Context,
    DemoBatch,
    Document,
    DocumentError,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeError,
    OutcomeKind,
    ProviderInfo,
    Setting,
    Token,
    TransportError,
    TransportFailure,
)
from docrelay._models import retry_after_seconds

from ._classify import classify, parse_error_body
from ._ubl import is_valid_document_id, read_ubl
from .sandbox import EConnectSandbox

if TYPE_CHECKING:
    from docrelay.sandbox import Sandbox

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "NAME",
    "EConnectSandbox",
    "build_request",
    "checked_document_id",
    "classify_response",
    "demo_batch",
    "fetch_token",
    "prepare_headers",
    "provider_info",
    "provider_sandbox",
    "token_url",
]

NAME = "econnect"

#: Assumption (no public limit found): eConnect answers 413 above some size; 10 MiB here.
DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024

SANDBOX_URL = "http://127.0.0.1:8701"
ACCEPTANCE_URL = "https://accp-psb.econnect.eu"
PRODUCTION_URL = "https://psb.econnect.eu"

_ACCEPTANCE_TOKEN_URL = "https://accp-identity.econnect.eu/connect/token"  # noqa: S105 - a URL
_PRODUCTION_TOKEN_URL = "https://identity.econnect.eu/connect/token"  # noqa: S105 - a URL
#: The setting naming the token endpoint of each known PSB base URL. They are settings (not
#: constants) so that the engine allows their hosts: auxiliary requests may only go to hosts
#: named by the base URL or a URL-valued setting.
_TOKEN_URL_SETTINGS: Mapping[str, tuple[str, str]] = {
    ACCEPTANCE_URL: ("acceptance_token_url", _ACCEPTANCE_TOKEN_URL),
    PRODUCTION_URL: ("production_token_url", _PRODUCTION_TOKEN_URL),
}

DEFAULT_SEND_PATH = "/api/v1/{party_id}/salesInvoice/send"
DEFAULT_ORDER_SEND_PATH = "/api/v1/{party_id}/purchaseOrder/send"
DOCUMENT_ID_HEADER = "X-EConnect-DocumentId"

#: Document kinds and the setting holding their send path (with its default).
_KIND_PATHS: Mapping[str, tuple[str, str]] = {
    "invoice": ("send_path", DEFAULT_SEND_PATH),
    "credit_note": ("send_path", DEFAULT_SEND_PATH),
    "order": ("order_send_path", DEFAULT_ORDER_SEND_PATH),
}

SETTINGS = (
    Setting(
        "client_id",
        help="OAuth2 client id of the application (from eConnect).",
        required=True,
    ),
    Setting("client_secret", help="OAuth2 client secret.", secret=True, required=True),
    Setting(
        "party_id",
        help="The sending party id, e.g. NL:KVK:12345678 (metadata 'party_id' overrides it "
        "per document).",
        required=True,
    ),
    Setting(
        "token_url",
        type="str",
        help="OAuth2 token endpoint. Default: acceptance_token_url or production_token_url "
        "when base_url is that environment's PSB URL, else {base_url}/connect/token.",
    ),
    Setting(
        "acceptance_token_url",
        default=_ACCEPTANCE_TOKEN_URL,
        help="Token endpoint used with the acceptance PSB (https://accp-psb.econnect.eu).",
    ),
    Setting(
        "production_token_url",
        default=_PRODUCTION_TOKEN_URL,
        help="Token endpoint used with the production PSB (https://psb.econnect.eu).",
    ),
    Setting("scope", default="ap", help="OAuth2 scope requested with the token."),
    Setting(
        "send_path",
        default=DEFAULT_SEND_PATH,
        help="Path template for invoices and credit notes ({party_id} is URL-quoted).",
    ),
    Setting(
        "order_send_path",
        default=DEFAULT_ORDER_SEND_PATH,
        help="Path template for orders ({party_id} is URL-quoted).",
    ),
    Setting(
        "content_type",
        default="application/xml",
        help="How the UBL travels: 'application/xml' (raw body) or 'multipart/form-data' "
        "(one file part).",
    ),
    Setting(
        "subscription_key",
        help="Legacy Subscription-Key header (optional; no longer required by the PSB API).",
        secret=True,
    ),
    Setting(
        "max_payload_bytes",
        default=DEFAULT_MAX_PAYLOAD_BYTES,
        help="Largest document sent; larger ones are refused before sending (assumed 10 MiB).",
    ),
)


# ---------------------------------------------------------------------------------------------
# Declaration
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def provider_info() -> ProviderInfo:
    return ProviderInfo(
        name=NAME,
        content_type="application/xml",
        title="eConnect Procurement Service Bus (PSB)",
        environments={
            "sandbox": SANDBOX_URL,
            "acceptance": ACCEPTANCE_URL,
            "production": PRODUCTION_URL,
        },
        default_environment="acceptance",
        auth="oauth2-client-credentials",
        kinds=tuple(_KIND_PATHS),
        max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
        rate_limit=None,
        idempotency="key",
        async_validation="none",
        settings=SETTINGS,
        credential_setting="client_id",
        docs_url="https://psb.econnect.eu/endpoints/overview.html",
    )


@docrelay.hookimpl
def provider_sandbox() -> type[Sandbox]:
    return EConnectSandbox


# ---------------------------------------------------------------------------------------------
# Token
# ---------------------------------------------------------------------------------------------


def token_url(ctx: Context) -> str:
    """The token endpoint: ``token_url``, else the identity server of the acceptance or
    production PSB base URL, else ``{base_url}/connect/token`` (the sandbox, a proxy)."""
    explicit = ctx.setting("token_url")
    if explicit:
        return str(explicit)
    base = ctx.base_url.rstrip("/")
    if base in _TOKEN_URL_SETTINGS:
        setting, default = _TOKEN_URL_SETTINGS[base]
        return str(ctx.setting(setting, default))
    return base + "/connect/token"


def _config_error(message: str, rule: str, status: int | None = None) -> OutcomeError:
    return OutcomeError(
        Outcome(kind=OutcomeKind.CONFIG_ERROR, status=status, message=message, rule=rule)
    )


def fetch_token(ctx: Context) -> Token:
    """POST the client credentials to the token endpoint; raise OutcomeError on failure."""
    client_id = ctx.setting("client_id")
    client_secret = ctx.setting("client_secret")
    if not client_id or not client_secret:
        raise _config_error(
            "eConnect client_id and client_secret must be set", "econnect:token-no-credentials"
        )
    ctx.secret(str(client_secret))
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": str(client_id),
            "client_secret": str(client_secret),
            "scope": str(ctx.setting("scope", "ap")),
        }
    ).encode()
    url = token_url(ctx)
    try:
        response = ctx.request(
            "POST",
            url,
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
    except TransportFailure as exc:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"eConnect token endpoint unreachable ({exc.error.kind})",
                rule="econnect:token-transport",
            )
        ) from None
    return _token_from_response(response)


def _token_from_response(response: HttpResponse) -> Token:
    status = response.status
    if status == 200:
        data = response.json()
        value = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(value, str) or not value:
            raise _config_error(
                "eConnect token endpoint answered 200 without an access_token (check token_url)",
                "econnect:token-malformed",
                status,
            )
        expires_in: Any = data.get("expires_in", 3600) if isinstance(data, Mapping) else 3600
        try:
            seconds = float(expires_in)
        except (TypeError, ValueError):
            seconds = 3600.0
        if not 0 <= seconds <= 366 * 86400:  # also NaN: fall back to the documented hour
            seconds = 3600.0
        return Token.from_expires_in(value, seconds)
    body = parse_error_body(response)
    said = body.message or f"HTTP {status}"
    if 500 <= status <= 599:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                status=status,
                message=f"eConnect token endpoint failed: {said}",
                wait=retry_after_seconds(response.header("Retry-After"), _now()),
                rule="econnect:token-5xx",
            )
        )
    if status == 429:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.THROTTLED,
                status=status,
                message=f"eConnect token endpoint throttled: {said}",
                wait=retry_after_seconds(response.header("Retry-After"), _now()),
                rule="econnect:token-429",
            )
        )
    raise _config_error(
        f"eConnect token endpoint refused the client credentials: {said}",
        "econnect:token-refused",
        status,
    )


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def _multipart(payload: bytes, filename: str, boundary: str) -> tuple[bytes, str]:
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        "Content-Type: application/xml\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + payload + tail, f"multipart/form-data; boundary={boundary}"


def _int_setting(ctx: Context, name: str, default: int) -> int:
    value = ctx.setting(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _config_error(
            f"eConnect setting {name} must be an integer", f"econnect:setting-{name}"
        ) from None


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


@docrelay.hookimpl
def build_request(document: Document, ctx: Context) -> HttpRequest | None:
    if document.provider != NAME:
        return None
    if document.kind not in _KIND_PATHS:
        raise DocumentError(
            f"eConnect cannot send documents of kind {document.kind!r} "
            f"(kinds: {', '.join(_KIND_PATHS)})"
        )
    limit = _int_setting(ctx, "max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if len(document.payload) > limit:
        raise DocumentError(
            f"document is {len(document.payload)} bytes, over the eConnect limit of "
            f"{limit} bytes (setting max_payload_bytes)"
        )
    key = checked_document_id(ctx)
    ubl = read_ubl(document.payload)
    if ubl.id is not None and ubl.id.strip().casefold() == key.strip().casefold():
        raise DocumentError(
            f"refused before sending: {DOCUMENT_ID_HEADER} must not be the invoice number "
            f"({ubl.id!r}): eConnect cannot tell a corrected resend from a duplicate then"
        )

    party = document.metadata.get("party_id") or ctx.setting("party_id")
    if not party:
        raise _config_error("eConnect party_id is not set", "econnect:no-party")
    setting, default = _KIND_PATHS[document.kind]
    template = str(ctx.setting(setting, default))
    try:
        path = template.format(party_id=urllib.parse.quote(str(party), safe=":"))
    except (KeyError, IndexError, ValueError):
        raise _config_error(
            f"eConnect setting {setting} is not a valid template (only {{party_id}})",
            f"econnect:setting-{setting}",
        ) from None

    params: dict[str, str] = {}
    if document.metadata.get("receiver_id"):
        params["receiverId"] = document.metadata["receiver_id"]
    if document.metadata.get("channel"):
        params["channel"] = document.metadata["channel"]

    mode = str(ctx.setting("content_type", "application/xml")).strip()
    if mode.lower().startswith("multipart/form-data"):
        body, content_type = _multipart(
            document.payload, f"{ubl.id or document.id}.xml", "docrelay-" + key.replace("-", "")
        )
    else:
        body, content_type = document.payload, mode
    return HttpRequest(
        method="POST",
        url=path,
        body=body,
        headers={
            "Content-Type": content_type,
            "Accept": "application/json",
            DOCUMENT_ID_HEADER: key,
        },
        params=params,
    )


@docrelay.hookimpl(trylast=True)
def prepare_headers(request: HttpRequest, ctx: Context) -> Mapping[str, str] | None:
    # trylast: these headers are merged after every middleware plugin's, so the checked
    # documentId is the one that travels even if another plugin sets the header too.
    if ctx.provider.name != NAME:
        return None
    document_id = checked_document_id(ctx)
    credential = str(ctx.setting("client_id") or "")
    token = ctx.token(credential, fetch_token)
    headers = {"Authorization": f"Bearer {token}", DOCUMENT_ID_HEADER: document_id}
    subscription_key = ctx.setting("subscription_key")
    if subscription_key:
        headers["Subscription-Key"] = ctx.secret(str(subscription_key))
    return headers


@docrelay.hookimpl
def classify_response(
    response: HttpResponse | None, error: TransportError | None, ctx: Context
) -> Outcome | None:
    if ctx.provider.name != NAME:
        return None
    return classify(response, error, document_id=ctx.key)


# ---------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------


@docrelay.hookimpl
def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch | None:
    if not isinstance(sandbox, EConnectSandbox):
        return None
    from ._demo import batch

    return batch(sandbox)
