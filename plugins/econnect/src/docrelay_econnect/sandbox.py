"""A local imitation of the eConnect PSB API (and its identity server's token endpoint).

Routes:

- ``POST /connect/token``: OAuth2 client credentials (form-encoded ``grant_type``,
  ``client_id``, ``client_secret``, ``scope``). Answers ``{access_token, expires_in,
  token_type: "Bearer", scope}``; a wrong client gives 400 ``{"error": "invalid_client"}``.
  Not subject to fault injection (count-based faults hit only the API calls).
- ``POST /api/v1/{partyId}/salesInvoice/send`` (UBL ``Invoice`` or ``CreditNote``) and
  ``POST /api/v1/{partyId}/purchaseOrder/send`` (UBL ``Order``): raw XML or
  ``multipart/form-data`` with one file part. ``X-EConnect-DocumentId`` chooses the document
  id (a UUID is generated when absent). First time 200 ``{"id": documentId}``; the same id
  again for the same party 409, whatever the body.
- ``GET /api/v1/{partyId}/salesInvoice/{documentId}/status`` (and ``purchaseOrder``): the
  document's status history, ``[{id, name, description, createdOn}]``.

Errors use eConnect's shape ``{helpLink, message, code, requestId, dateTime}`` with
``code = "API" + status``: 401 without or with an expired bearer token, 403 when the party is
not linked to the client, 413 over ``max_payload`` bytes, 400 for a body that is not UBL or a
document id shorter than 6 characters or holding anything but letters, digits and ``-`` (the
plugin's own rule, :func:`~docrelay_econnect._ubl.is_valid_document_id`), 404 for an unknown
document id.

Options (``--option KEY=VALUE``): ``client_id``, ``client_secret``, ``parties`` (party ids
linked to the client, comma separated), ``token_ttl`` (seconds, 3600), ``max_payload`` (bytes,
10 MiB), ``delivery_delay`` (seconds until a document's status moves from ``Accepted`` to
``Sent``, 0.2), ``require_subscription_key`` (the legacy ``Subscription-Key`` header; off),
``lose_answer`` (document numbers, comma separated: the first send of each is processed and
its answer dropped, as the ``drop`` fault does, the "lost response" mode of providers.md 1.8;
empty), ``unavailable_once`` (document numbers: the first send of each is answered 503 before
anything is processed, as the ``error`` fault does; empty). These two aim a fault at one
document, which count-based faults cannot do when several workers send at once.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from docrelay.sandbox import (
    OAuthTokenRoute,
    Route,
    Sandbox,
    SandboxRequest,
    SandboxResponse,
    TokenIssuer,
)

from ._ubl import is_valid_document_id, read_ubl

__all__ = ["HELP_LINK", "EConnectSandbox"]

HELP_LINK = "https://psb.econnect.eu/endpoints/overview.html"

_DOCTYPES: Mapping[str, tuple[tuple[str, ...], str, str]] = {
    # path segment: (accepted UBL roots, effect kind, effect field for the document number)
    "salesInvoice": (("Invoice", "CreditNote"), "invoice_received", "invoice_id"),
    "purchaseOrder": (("Order",), "order_received", "order_id"),
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class EConnectSandbox(Sandbox):
    """The eConnect PSB sandbox; see the module docstring for routes and options."""

    name = "econnect"
    credential_headers = Sandbox.credential_headers | {"subscription-key"}
    token_route = OAuthTokenRoute(path="/connect/token", body="form")
    options: ClassVar[Mapping[str, Any]] = {
        "client_id": "econnect-sandbox",
        "client_secret": "econnect-sandbox-secret",
        "parties": "NL:KVK:12345678,NL:KVK:87654321",
        "token_ttl": 3600,
        "max_payload": 10 * 1024 * 1024,
        "delivery_delay": 0.2,
        "require_subscription_key": False,
        "subscription_key": "econnect-sandbox-subscription",
        "lose_answer": "",
        "unavailable_once": "",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: party id -> document id -> record (kind, root, number, body, statuses...)
        self.documents: dict[str, dict[str, dict[str, Any]]] = {}
        #: (party, document number) whose answer was already lost once (``lose_answer``).
        self.lost_answers: set[tuple[str, str]] = set()
        #: (party, document number) already answered 503 once (``unavailable_once``).
        self.failed_once: set[tuple[str, str]] = set()
        super().__init__(*args, **kwargs)

    # -- configuration --------------------------------------------------------------------------

    @property
    def parties(self) -> frozenset[str]:
        value = self.config.get("parties") or ()
        if isinstance(value, str):
            value = value.split(",")
        return frozenset(str(p).strip() for p in value if str(p).strip())

    def _names(self, option: str) -> frozenset[str]:
        value = self.config.get(option) or ()
        if isinstance(value, str):
            value = value.split(",")
        return frozenset(str(n).strip() for n in value if str(n).strip())

    @property
    def lose_answer(self) -> frozenset[str]:
        return self._names("lose_answer")

    @property
    def unavailable_once(self) -> frozenset[str]:
        return self._names("unavailable_once")

    def _number(self, name: str) -> float:
        return float(self.config[name])

    def _flag(self, name: str) -> bool:
        value = self.config.get(name)
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)

    # -- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        doc = r"(?P<doctype>salesInvoice|purchaseOrder)"
        return [
            Route("POST", re.compile(r"^/api/v1/(?P<party>[^/]+)/" + doc + r"/send$"), self._send),
            Route(
                "GET",
                re.compile(
                    r"^/api/v1/(?P<party>[^/]+)/" + doc + r"/(?P<document_id>[^/]+)/status$"
                ),
                self._status,
            ),
        ]

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self.documents.clear()
            self.lost_answers.clear()
            self.failed_once.clear()
            self.tokens = TokenIssuer(ttl=3600)

    # -- responses ------------------------------------------------------------------------------

    @staticmethod
    def problem(
        status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> SandboxResponse:
        """An eConnect error body."""
        return SandboxResponse.json(
            status,
            {
                "helpLink": HELP_LINK,
                "message": message,
                "code": f"API{status}",
                "requestId": uuid.uuid4().hex,
                "dateTime": _now_iso(),
            },
            headers,
        )

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        if status == 503:
            return self.problem(503, "The service is temporarily unavailable. Please retry.")
        return self.problem(status, "An unexpected error occurred. Please retry.")

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        return self.problem(429, "Too many requests.", headers)

    # -- token endpoint (the base's OAuth2 route, eConnect's refusals and grant) ---------------

    def token_refusal(self, error: str, request: SandboxRequest) -> SandboxResponse:
        return SandboxResponse.json(400, {"error": error})

    @staticmethod
    def _scopes(fields: Mapping[str, Any]) -> list[str]:
        return str(fields.get("scope") or "").split() or ["ap"]

    def check_token_request(
        self, fields: Mapping[str, Any], request: SandboxRequest
    ) -> SandboxResponse | None:
        if not set(self._scopes(fields)) <= {"ap", "vpd"}:
            return SandboxResponse.json(400, {"error": "invalid_scope"})
        return None

    def token_grant(
        self, fields: Mapping[str, Any], token: str, lifetime: float
    ) -> SandboxResponse:
        granted = super().token_grant(fields, token, lifetime)
        body = {**json.loads(granted.body), "scope": " ".join(self._scopes(fields))}
        return SandboxResponse.json(200, body, {"Cache-Control": "no-store"})

    # -- API ------------------------------------------------------------------------------------

    def _authorize(self, request: SandboxRequest) -> tuple[str | None, SandboxResponse | None]:
        """The party id of an authorised request, or the error to answer."""
        if self.bearer(request) is None:
            return None, self.problem(
                401,
                "Unauthorized: a valid bearer token is required.",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if self._flag("require_subscription_key") and request.header("Subscription-Key") != str(
            self.config["subscription_key"]
        ):
            return None, self.problem(
                401, "Access denied due to missing or invalid subscription key."
            )
        party = urllib.parse.unquote(request.params.get("party", ""))
        if party not in self.parties:
            return None, self.problem(
                403, f"PartyId '{party}' is not linked to this client; no permission."
            )
        return party, None

    @staticmethod
    def _file_part(request: SandboxRequest) -> bytes | None:
        ctype = request.header("Content-Type") or ""
        raw = b"Content-Type: " + ctype.encode("latin-1", "replace") + b"\r\n\r\n" + request.body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        if not message.is_multipart():
            return None
        for part in message.iter_parts():
            if part.get_filename() or part.get_param("name", header="content-disposition"):
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    return payload
        return None

    def _send(self, request: SandboxRequest) -> SandboxResponse:
        party, denied = self._authorize(request)
        if denied is not None or party is None:
            return denied or self.problem(403, "No permission.")
        limit = int(self._number("max_payload"))
        if len(request.body) > limit:
            return self.problem(413, f"The request is larger than the limit of {limit} bytes.")
        header = request.header("X-EConnect-DocumentId")
        if header is not None:
            problem = is_valid_document_id(header)
            if problem is not None:
                return self.problem(
                    400, f"X-EConnect-DocumentId '{header}' is invalid: it {problem}."
                )
        doctype = request.params["doctype"]
        roots, effect, number_field = _DOCTYPES[doctype]

        ctype = (request.header("Content-Type") or "").lower()
        if ctype.startswith("multipart/form-data"):
            payload = self._file_part(request)
            if payload is None:
                return self.problem(400, "The multipart body holds no file.")
        else:
            payload = request.body
        ubl = read_ubl(payload, roots)
        with self.lock:
            once = (party, str(ubl.id))
            if ubl.id in self.unavailable_once and once not in self.failed_once:
                self.failed_once.add(once)
                self.count_fault("error")
                return self.error_response(503, request)
            seen = self.documents.setdefault(party, {})
            if header is not None and header in seen:
                return self.problem(
                    409, f"Document '{header}' is already processed and thus duplicated."
                )
            if not ubl.is_ubl:
                return self.problem(400, f"The document is not valid UBL: {ubl.problem}.")
            document_id = header or str(uuid.uuid4())
            record: dict[str, Any] = {
                "id": document_id,
                "party": party,
                "doctype": doctype,
                "root": ubl.root,
                "number": ubl.id,
                "payload": payload,
                "receiver_id": request.arg("receiverId"),
                "channel": request.arg("channel"),
                "statuses": [],
            }
            seen[document_id] = record
            self._add_status(record, "Accepted", "The document is accepted by the PSB.")
            self.record_effect(effect, key=document_id, party=party, **{number_field: ubl.id})
            if ubl.id in self.lose_answer and once not in self.lost_answers:
                self.lost_answers.add(once)
                self.drop_answer()  # processed; the base drops the answer
        delay = self._number("delivery_delay")
        sent = (record, "Sent", "The document is delivered to the receiver.")
        if delay <= 0:
            self._add_status(*sent)
        else:
            self.later(delay, lambda: self._add_status(*sent))
        return SandboxResponse.json(200, {"id": document_id})

    def _add_status(self, record: dict[str, Any], name: str, description: str) -> None:
        with self.lock:
            record["statuses"].append(
                {
                    "id": str(uuid.uuid4()),
                    "name": name,
                    "description": description,
                    "createdOn": _now_iso(),
                }
            )

    def _status(self, request: SandboxRequest) -> SandboxResponse:
        party, denied = self._authorize(request)
        if denied is not None or party is None:
            return denied or self.problem(403, "No permission.")
        document_id = urllib.parse.unquote(request.params["document_id"])
        with self.lock:
            record = self.documents.get(party, {}).get(document_id)
            if record is None or record["doctype"] != request.params["doctype"]:
                return self.problem(404, f"Document '{document_id}' not found.")
            return SandboxResponse.json(200, list(record["statuses"]))

    # -- for tests ------------------------------------------------------------------------------

    def document(self, party: str, document_id: str) -> dict[str, Any] | None:
        """The stored record of one document (``None`` if the sandbox never took it in)."""
        with self.lock:
            record = self.documents.get(party, {}).get(document_id)
            return dict(record) if record is not None else None
