"""A local Procuros API v2: sending, error reporting, the transaction list, fault injection.

Behaviour (the real API's, as documented; where undocumented, providers.md §2.6 / §8):

- every ``/v2/*`` route needs ``Authorization: Bearer <api_token>``, else 401 ``{message,
  errorUrl}``; ``GET /v2/ping`` answers 204;
- ``POST /v2/transactions`` validates the type and the content (required header fields per
  type, party identifiers) -> 422 ``{message, errors, errorUrl}``; a payload it already has ->
  400 ``{"message": "Payload already received", "errorUrl"}``; a receiver whose trade
  relationship is not active (or a type the partner does not accept) -> 202 ``{message}``;
  else 201 ``{procurosTransactionId}``. Each accepted (201 or 202) transaction is one
  ``transaction_received`` effect;
- ``POST /v2/errors`` -> 201 ``{"message": "OK.", errorUrl}``, 422 when ``errorReason`` or
  ``errorType`` is missing or wrong; the reports are kept in :attr:`reported_errors`;
- ``GET /v2/all-transactions`` (and ``/{id}``) lists what was sent, cursor-paginated, with the
  spec's filters ``filter[type]``, ``filter[flow]``, ``filter[status]`` and
  ``filter[created_between]`` (``YYYY-MM-DD,YYYY-MM-DD``, inclusive; 422 for a bad value); a
  transaction answered 201 has the status ``forwarded_status`` (``PENDING``), one answered 202
  ``DROPPED``; the query of every list request is kept in :attr:`lookups`;
- ``GET /portal/errors/{id}`` shows what an ``errorUrl`` points to (no auth: it stands for
  the Procuros portal).

Options (``--option KEY=VALUE``; lists as comma-separated strings on the command line):

``api_token``            the one token accepted (default ``procuros-sandbox-token``)
``duplicate_key``        ``hash`` (canonical JSON of the whole body, default) or
                         ``document_number`` (type + document number; hash when it has none)
``duplicate_message``    the 400 message for a known payload (``Payload already received``)
``inactive_receivers``   receiver party identifiers whose trade relationship is not active
``inactive_types``       transaction types the receiving partners do not accept (202)
``unknown_parties``      party identifiers Procuros cannot resolve (422 on that party)
``portal_url``           base of the generated ``errorUrl`` (default ``{sandbox}/portal``)
``flow``                 ``LIVE`` or ``TEST``, the flow of stored transactions
``forwarded_status``     the listed status of a transaction answered 201 (``PENDING``;
                         ``SUCCESS``, ``FAILED`` or ``UNKNOWN`` to imitate later progress)
``list_status``          when set (e.g. 403, 500), ``GET /v2/all-transactions`` and
                         ``/{id}`` answer this status instead (a lookup that fails)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

from ._transactions import TRANSACTION_STATUSES, TRANSACTION_TYPES, TYPES, document_number

__all__ = ["ProcurosSandbox"]

_INVALID = "The given data was invalid."
_UNRESOLVED = "Could not resolve party using provided identifiers"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _identifiers(party: Any) -> list[str]:
    if not isinstance(party, Mapping):
        return []
    ids = party.get("identifiers")
    if not isinstance(ids, list):
        return []
    return [str(i["identifier"]) for i in ids if isinstance(i, Mapping) and i.get("identifier")]


class ProcurosSandbox(Sandbox):
    """The Procuros API v2 on 127.0.0.1 (see the module docstring for options)."""

    name = "procuros"
    options: ClassVar[Mapping[str, Any]] = {
        "api_token": "procuros-sandbox-token",
        "duplicate_key": "hash",
        "duplicate_message": "Payload already received",
        "inactive_receivers": (),
        "inactive_types": (),
        "unknown_parties": (),
        "portal_url": "",
        "flow": "LIVE",
        "forwarded_status": "PENDING",
        "list_status": 0,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._state_lock = threading.RLock()
        self.transactions: list[dict[str, Any]] = []
        self.reported_errors: list[dict[str, Any]] = []
        self.portal_errors: dict[str, dict[str, Any]] = {}
        #: The query of every ``GET /v2/all-transactions`` (first value of each parameter).
        self.lookups: list[dict[str, str]] = []
        super().__init__(*args, **kwargs)
        if self.config["duplicate_key"] not in ("hash", "document_number"):
            raise ValueError(
                "procuros sandbox option duplicate_key must be hash or document_number"
            )
        if self.config["forwarded_status"] not in TRANSACTION_STATUSES:
            raise ValueError(
                "procuros sandbox option forwarded_status must be one of "
                + ", ".join(TRANSACTION_STATUSES)
            )
        int(self.config.get("list_status") or 0)

    # -- plumbing -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        v2 = [
            Route("GET", re.compile(r"^/v2/ping$"), self._ping),
            Route("POST", re.compile(r"^/v2/transactions$"), self._send),
            Route("POST", re.compile(r"^/v2/errors$"), self._report_error),
            Route("GET", re.compile(r"^/v2/all-transactions$"), self._list_all),
            Route(
                "GET",
                re.compile(r"^/v2/all-transactions/(?P<id>[^/]+)$"),
                self._get_one,
            ),
        ]
        catch_all = [
            Route(m, re.compile(r"^/v2/.*$"), self._not_found)
            for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
        ]
        return [
            *(Route(r.method, r.pattern, self._authenticated(r.handler), r.faults) for r in v2),
            *catch_all,
            Route("GET", re.compile(r"^/portal/errors/(?P<id>[^/]+)$"), self._portal, faults=False),
            Route(
                "GET", re.compile(r"^/_sandbox/reported-errors$"), self._get_reported, faults=False
            ),
        ]

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self.transactions.clear()
            self.reported_errors.clear()
            self.portal_errors.clear()
            self.lookups.clear()

    @property
    def api_token(self) -> str:
        return str(self.config["api_token"])

    def _portal_base(self) -> str:
        base = str(self.config.get("portal_url") or "")
        return base.rstrip("/") if base else self.url + "/portal"

    def _error_url(self, message: str, **details: Any) -> str:
        error_id = str(uuid.uuid4())
        with self._state_lock:
            self.portal_errors[error_id] = {"id": error_id, "message": message, **details}
        return f"{self._portal_base()}/errors/{error_id}"

    def _client_error(self, status: int, message: str, **details: Any) -> SandboxResponse:
        return SandboxResponse.json(
            status, {"message": message, "errorUrl": self._error_url(message, **details)}
        )

    def _authenticated(self, handler: Any) -> Any:
        def wrapped(request: SandboxRequest) -> SandboxResponse:
            auth = request.header("Authorization") or ""
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not token or not hmac.compare_digest(token.encode(), self.api_token.encode()):
                return self._client_error(401, "Unauthenticated.")
            result: SandboxResponse = handler(request)
            return result

        return wrapped

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        return SandboxResponse.json(status, {"message": detail or "Server Error"})

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        message = "Too Many Attempts."
        return SandboxResponse.json(
            429, {"message": message, "errorUrl": self._error_url(message)}, headers
        )

    # -- routes ---------------------------------------------------------------------------------

    def _ping(self, request: SandboxRequest) -> SandboxResponse:
        return SandboxResponse.empty(204)

    def _not_found(self, request: SandboxRequest) -> SandboxResponse:
        auth = self._authenticated(lambda r: self._client_error(404, "Not Found."))
        result: SandboxResponse = auth(request)
        return result

    def _validate(self, data: Any) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not isinstance(data, Mapping):
            return {"type": ["The type field is required."]}
        type_ = data.get("type")
        if type_ is None:
            errors["type"] = ["The type field is required."]
        elif not isinstance(type_, str) or type_ not in TYPES:
            errors["type"] = [f'Transaction type "{type_}" is not valid']
        content = data.get("content")
        if not isinstance(content, Mapping):
            errors["content"] = ["The content field is required."]
            return errors
        if "type" in errors:
            return errors
        spec = TYPES[str(type_)]
        for name in spec.required:
            if content.get(name) in (None, "", [], {}):
                errors[f"content.{name}"] = [f"The content.{name} field is required."]
        header = content.get("header")
        if not isinstance(header, Mapping):
            return errors
        for name in spec.header_required:
            path = f"content.header.{name}"
            value = header.get(name)
            if value in (None, "", [], {}):
                errors[path] = [f"The {path} field is required."]
                continue
            is_party = isinstance(value, Mapping) or name in (spec.sender, spec.receiver)
            if is_party and not _identifiers(value):
                errors[f"{path}.identifiers"] = [f"The {path}.identifiers field is required."]
        unknown = set(_as_list(self.config.get("unknown_parties")))
        if unknown:
            for name, value in header.items():
                ids = _identifiers(value)
                if ids and any(i in unknown for i in ids):
                    errors.setdefault(name, []).append(_UNRESOLVED)
        return errors

    def _duplicate_key(self, data: Mapping[str, Any]) -> str:
        if self.config["duplicate_key"] == "document_number":
            number = document_number(str(data["type"]), data["content"])
            if number is not None:
                return f"number:{data['type']}:{number}"
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "hash:" + hashlib.sha256(canonical.encode()).hexdigest()

    def _send(self, request: SandboxRequest) -> SandboxResponse:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return self._client_error(400, "The request body is not valid JSON.")
        errors = self._validate(data)
        if errors:
            url = self._error_url(_INVALID, errors=errors)
            return SandboxResponse.json(
                422, {"message": _INVALID, "errors": errors, "errorUrl": url}
            )
        type_ = str(data["type"])
        content = data["content"]
        spec = TYPES[type_]
        number = document_number(type_, content)
        receiver_ids = _identifiers(content["header"].get(spec.receiver))
        key = self._duplicate_key(data)
        with self._state_lock:
            duplicate = self.duplicate_of(request, key)
            if duplicate is not None:
                return duplicate
            tx_id = str(uuid.uuid4())
            self.idempotency.remember(key, tx_id)
            inactive = set(_as_list(self.config.get("inactive_receivers")))
            if type_ in set(_as_list(self.config.get("inactive_types"))):
                reply: str | None = "Trade partner does not accept transactions of this type."
            elif inactive and any(i in inactive for i in receiver_ids):
                reply = "Trade relationship not yet active."
            else:
                reply = None
            self.transactions.append(
                {
                    "procurosTransactionId": tx_id,
                    "type": type_,
                    "status": "DROPPED" if reply else str(self.config["forwarded_status"]),
                    "flow": str(self.config.get("flow") or "LIVE"),
                    "createdAt": _now_iso(),
                    "content": content,
                }
            )
            self.record_effect(
                "transaction_received",
                key=tx_id,
                type=type_,
                document_number=number,
                receiver=receiver_ids[0] if receiver_ids else None,
                forwarded=reply is None,
                duplicate_key=key,
            )
        if reply is not None:
            return SandboxResponse.json(202, {"message": reply})
        return SandboxResponse.json(201, {"procurosTransactionId": tx_id})

    def duplicate_response(
        self, request: SandboxRequest, key: Hashable, first: Any
    ) -> SandboxResponse:
        """A payload Procuros already has: 400 with the first transaction's id."""
        return self._client_error(
            400, str(self.config["duplicate_message"]), procurosTransactionId=first
        )

    def _report_error(self, request: SandboxRequest) -> SandboxResponse:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        errors: dict[str, list[str]] = {}
        if not isinstance(data, Mapping):
            data = {}
        reason = data.get("errorReason")
        if not isinstance(reason, str) or not reason.strip():
            errors["errorReason"] = ["The error reason field is required."]
        etype = data.get("errorType")
        if etype is None:
            errors["errorType"] = ["The error type field is required."]
        elif etype not in ("DATA", "INTERNAL"):
            errors["errorType"] = ["The selected error type is invalid."]
        ctx = data.get("errorContext")
        if ctx is not None and (
            not isinstance(ctx, Mapping) or not all(isinstance(v, str) for v in ctx.values())
        ):
            errors["errorContext"] = ["The error context must be an object of strings."]
        ttype = data.get("transactionType")
        if ttype is not None and ttype not in TRANSACTION_TYPES:
            errors["transactionType"] = ["The selected transaction type is invalid."]
        ident = data.get("transactionIdentifier")
        if ident is not None and not isinstance(ident, str):
            errors["transactionIdentifier"] = ["The transaction identifier must be a string."]
        if errors:
            return SandboxResponse.json(422, {"message": _INVALID, "errors": errors})
        record = {
            "errorReason": reason,
            "errorType": etype,
            "errorContext": dict(ctx or {}),
            "transactionIdentifier": ident,
            "transactionType": ttype,
            "at": time.time(),
        }
        url = self._error_url(str(reason), reported=True)
        record["errorUrl"] = url
        with self._state_lock:
            self.reported_errors.append(record)
        return SandboxResponse.json(201, {"message": "OK.", "errorUrl": url})

    def _list_failure(self) -> SandboxResponse | None:
        status = int(self.config.get("list_status") or 0)
        if not status:
            return None
        if status >= 500:
            return SandboxResponse.json(status, {"message": "Server Error"})
        message = {403: "This action is unauthorized.", 404: "Not Found."}.get(status, "Error.")
        return self._client_error(status, message)

    def _filters(self, request: SandboxRequest) -> SandboxResponse | None:
        """The validated filters of a list request; a 422 response for a bad one."""
        errors: dict[str, list[str]] = {}
        checks = {
            "filter[type]": TRANSACTION_TYPES,
            "filter[flow]": ("LIVE", "TEST"),
            "filter[status]": TRANSACTION_STATUSES,
        }
        for name, allowed in checks.items():
            value = request.arg(name)
            if value is not None and value not in allowed:
                errors[name] = [f"The selected {name} is invalid."]
        between = request.arg("filter[created_between]")
        if between is not None:
            parts = between.split(",")
            try:
                if len(parts) != 2:
                    raise ValueError(between)
                for part in parts:
                    datetime.strptime(part.strip(), "%Y-%m-%d")
            except ValueError:
                errors["filter[created_between]"] = [
                    "The filter[created_between] must be two dates: YYYY-MM-DD,YYYY-MM-DD."
                ]
        if errors:
            return SandboxResponse.json(422, {"message": _INVALID, "errors": errors})
        return None

    def _matches(self, request: SandboxRequest, t: Mapping[str, Any]) -> bool:
        for name, field in (
            ("filter[type]", "type"),
            ("filter[flow]", "flow"),
            ("filter[status]", "status"),
        ):
            value = request.arg(name)
            if value is not None and t[field] != value:
                return False
        between = request.arg("filter[created_between]")
        if between is not None:
            start, end = (p.strip() for p in between.split(","))
            if not start <= str(t["createdAt"])[:10] <= end:
                return False
        return True

    def _list_all(self, request: SandboxRequest) -> SandboxResponse:
        with self._state_lock:
            self.lookups.append({k: v[0] for k, v in request.query.items() if v})
        failure = self._list_failure()
        if failure is not None:
            return failure
        bad = self._filters(request)
        if bad is not None:
            return bad
        per_page_raw = request.arg("per_page", "100") or "100"
        try:
            per_page = int(per_page_raw)
        except ValueError:
            per_page = 0
        if not 1 <= per_page <= 100:
            return SandboxResponse.json(
                422,
                {"message": _INVALID, "errors": {"per_page": ["Must be between 1 and 100."]}},
            )
        cursor = request.arg("cursor") or "0"
        try:
            offset = int(cursor.removeprefix("c"))
        except ValueError:
            return SandboxResponse.json(
                422, {"message": _INVALID, "errors": {"cursor": ["The cursor is invalid."]}}
            )
        with self._state_lock:
            items = [t for t in self.transactions if self._matches(request, t)]
        page = items[offset : offset + per_page]
        more = offset + per_page < len(items)
        next_cursor = f"c{offset + per_page}" if more else None
        if next_cursor:
            query = {k: v[0] for k, v in request.query.items() if v and k != "cursor"}
            query["cursor"] = next_cursor
            query["per_page"] = str(per_page)
            next_url: str | None = f"{self.url}/v2/all-transactions?" + urlencode(query)
        else:
            next_url = None
        return SandboxResponse.json(
            200,
            {
                "items": page,
                "hasMore": more,
                "perPage": per_page,
                "count": len(page),
                "nextCursor": next_cursor,
                "nextPageUrl": next_url,
            },
        )

    def _get_one(self, request: SandboxRequest) -> SandboxResponse:
        failure = self._list_failure()
        if failure is not None:
            return failure
        with self._state_lock:
            for t in self.transactions:
                if t["procurosTransactionId"] == request.params.get("id"):
                    return SandboxResponse.json(200, {"data": t})
        return self._client_error(404, "Transaction not found.")

    def _portal(self, request: SandboxRequest) -> SandboxResponse:
        with self._state_lock:
            entry = self.portal_errors.get(request.params.get("id", ""))
        if entry is None:
            return SandboxResponse.json(404, {"message": "Not Found."})
        return SandboxResponse.json(200, entry)

    def _get_reported(self, request: SandboxRequest) -> SandboxResponse:
        with self._state_lock:
            return SandboxResponse.json(200, {"errors": list(self.reported_errors)})
