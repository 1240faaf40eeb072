"""A local AQI: subscription keys, layer-1 validation, callbacks and layer-2 notifications.

Routes (as the Riverty docs describe them, see README for what is assumed):

- ``POST /accounting/v1/businesses/{businessCode}/customers/{customerNumber}/orders`` and
  ``.../orders/{orderReference}/{invoices|cancellations|goodwills|returns|payments}``:
  ``X-Subscription-Key`` checked; layer 1 (required fields, lengths, formats, enums) answers
  ``400 {type, title, code, description}``; else ``200 {"internalRequestId": uuid}`` and, after
  ``callback_delay`` seconds, layer 2 POSTs an ``accounting/EDIErrorSent`` notification to every
  subscribed callback.
- ``POST /administration/v1/notification-callbacks`` ``{callbackUrl, notificationTypes}`` ->
  ``200 {callbackUrl, description, id, notificationTypes}``; ``GET`` lists them.
- ``POST /_sandbox/redeliver``: send again every notification that was dropped (option
  ``callback_drop_rate``) or that the callback did not take (no 2xx answer);
  ``GET /_sandbox/notifications``: every notification sent, with the callback's status.

State: per transactionId (``X-Request-ID``, generated when absent): pending, OK or
ERROR_IN_FILE; per order (businessCode, customerNumber, orderReference): confirmed, invoiced,
cancellations, goodwills, returns, payments. Layer 2 answers ERROR_IN_FILE for content errors
(``content_rules``), for a request out of order (anything but an order before its order is OK;
a return before an invoice of the order is OK, option ``return_requires_invoice``), for an
order reference that already exists, and for a transactionId that already ended OK. A resend
with the same transactionId after ERROR_IN_FILE is processed again; one while the first is
still pending is ignored (same ``internalRequestId``, no second notification).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote

import attrs
from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

from ._notify import EDI_ERROR_SENT, REQUEST_TYPES
from ._schema import validate

__all__ = ["REQUEST_TYPE_BY_KIND", "AqiSandbox"]

_BASE = r"^/accounting/v1/businesses/(?P<business>[^/]+)/customers/(?P<customer>[^/]+)/orders"

#: Route segment -> document kind -> requestType of the notification.
KIND_BY_SEGMENT = {
    "invoices": "invoice",
    "cancellations": "cancellation",
    "goodwills": "goodwill",
    "returns": "return",
    "payments": "payment",
}
REQUEST_TYPE_BY_KIND = {kind: request_type for request_type, kind in REQUEST_TYPES.items()}

#: Layer-2 content rules the sandbox knows (option ``content_rules``).
CONTENT_RULES = ("line_item_status", "language_code_lower", "field_length")

#: Layer-2 field length checks (rule ``field_length``), the sandbox's own choice (the seed
#: names the rule, not the fields): (AaaS field name, payload path, limit, status). "W": a
#: non-critical field, truncated, the request processed; "E": a field downstream processes
#: need, the request not processed.
FIELD_LIMITS: tuple[tuple[str, str, int, str], ...] = (
    ("BILLTOSTREET", "billToAddress.street", 35, "W"),
    ("SHIPTOSTREET", "shipToAddress.street", 35, "W"),
    ("LINEITEMDESCRIPTION", "items[].description", 40, "W"),
    ("LINEITEMPRODUCTID", "items[].productId", 35, "E"),
)

#: The environment names AQI puts in ``DataSource`` (seed 004).
DATA_SOURCES = ("PreProd", "Prod")

_DESCRIPTION = (
    "Body of the request does not conform to the definition which is associated with the "
    "content type application/json."
)
_BAD_KEY = (
    "Access denied due to invalid subscription key. "
    "Make sure to provide a valid key for an active subscription."
)
_MISSING_KEY = (
    "Access denied due to missing subscription key. "
    "Make sure to include subscription key when making requests to an API."
)


def _float(value: Any) -> float:
    return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or ()]


def _values(body: Any, path: str) -> list[Any]:
    """The values at *path* (``a.b``, ``items[].c``) in *body*."""
    current: list[Any] = [body]
    for part in path.split("."):
        many = part.endswith("[]")
        name = part[:-2] if many else part
        found: list[Any] = []
        for node in current:
            value = node.get(name) if isinstance(node, dict) else None
            if many and isinstance(value, list):
                found.extend(value)
            elif not many and value is not None:
                found.append(value)
        current = found
    return current


def _length_items(body: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, path, limit, status in FIELD_LIMITS:
        for value in _values(body, path):
            if not isinstance(value, str) or len(value) <= limit:
                continue
            if status == "W":
                text = (
                    f"The value of field {name} exceeds {limit} characters and was truncated "
                    f"to '{value[:limit]}'."
                )
            else:
                text = f"The value of field {name} exceeds {limit} characters."
            out.append(
                {"fieldName": name, "providedValue": value, "status": status,
                 "ErrorDescription": text}
            )  # fmt: skip
            break
    return out


@attrs.define
class Transaction:
    """What the sandbox knows about one transactionId."""

    id: str
    state: str  # "pending" | "OK" | "ERROR_IN_FILE"
    internal_request_id: str
    kind: str
    order: tuple[str, str, str]
    submissions: int = 1


@attrs.define
class Order:
    """One order's life at the provider."""

    key: tuple[str, str, str]
    confirmed: bool = False
    transaction_id: str | None = None
    invoices: list[str] = attrs.field(factory=list)
    cancellations: int = 0
    goodwills: int = 0
    returns: int = 0
    payments: int = 0


@attrs.define
class _Job:
    transaction_id: str
    internal_request_id: str
    kind: str
    order: tuple[str, str, str]
    body: dict[str, Any]
    duplicate: bool


class AqiSandbox(Sandbox):
    """Riverty Accounting as a Service / AQI, as its public documents describe it.

    Options (``--option KEY=VALUE``):

    - ``subscription_key`` / ``secondary_key``: the primary and secondary keys that work.
    - ``bad_key_status``: 500 (as the docs say) or 401 for a missing or wrong key.
    - ``callback_delay``: seconds before layer 2 answers (0.05).
    - ``callback_duplicate``: send every notification twice (false).
    - ``callback_drop_rate``: share of notifications lost on the way (0.0); they are kept and
      ``POST /_sandbox/redeliver`` sends them.
    - ``content_rules``: layer-2 rules, comma separated: ``line_item_status`` (an order item
      without ``positionType`` -> LINEITEMSTATUS must not be empty), ``language_code_lower``
      (an address ``language`` not in lower case -> BILLTOLANGUAGECODE/SHIPTOLANGUAGECODE),
      ``field_length`` (:data:`FIELD_LIMITS`: items with ``"status": "W"`` (truncated, the
      request is processed) or ``"E"`` (not processed)).
    - ``warnings_result``: the ``result`` of a notification whose items are all W: ``OK``
      (the default) or ``ERROR_IN_FILE`` (the seed does not say which AQI sends).
    - ``data_source``: the ``DataSource`` put in every notification's ``parameters``
      (``PreProd``, the sandbox being a test environment; ``Prod``; empty: left out).
      ``POST /_sandbox/data-source {"value": ...}`` changes it at run time.
    - ``return_requires_invoice``: a return needs a confirmed invoice of its order (true).
    - ``business_codes``: the business codes that exist (``1000``); others answer 404.
    """

    name: ClassVar[str] = "aqi"
    credential_headers = Sandbox.credential_headers | {"x-subscription-key"}
    options: ClassVar[Mapping[str, Any]] = {
        "subscription_key": "aqi-sandbox-key",
        "secondary_key": "aqi-sandbox-key-secondary",
        "bad_key_status": 500,
        "callback_delay": 0.05,
        "callback_duplicate": False,
        "callback_drop_rate": 0.0,
        "content_rules": ",".join(CONTENT_RULES),
        "return_requires_invoice": True,
        "business_codes": "1000",
        "warnings_result": "OK",
        "data_source": "PreProd",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.callbacks: dict[str, dict[str, Any]] = {}
        self.transactions: dict[str, Transaction] = {}
        self.orders: dict[tuple[str, str, str], Order] = {}
        self.notifications: list[dict[str, Any]] = []
        self.undelivered: list[tuple[str, dict[str, Any]]] = []
        super().__init__(*args, **kwargs)
        bad = int(self.config["bad_key_status"])
        if bad not in (500, 401):
            raise ValueError("aqi sandbox option bad_key_status must be 500 or 401")
        unknown = set(_names(self.config["content_rules"])) - set(CONTENT_RULES)
        if unknown:
            raise ValueError(f"unknown aqi content rule(s): {', '.join(sorted(unknown))}")
        if str(self.config["warnings_result"]).upper() not in ("OK", "ERROR_IN_FILE"):
            raise ValueError("aqi sandbox option warnings_result must be OK or ERROR_IN_FILE")

    # -- routes -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        follow_up = r"/(?P<order>[^/]+)/(?P<segment>" + "|".join(KIND_BY_SEGMENT) + r")$"
        return [
            Route("POST", re.compile(_BASE + r"$"), self._post_order),
            Route(
                "POST",
                re.compile(_BASE + follow_up),
                self._post_follow_up,
            ),
            Route(
                "POST",
                re.compile(r"^/administration/v1/notification-callbacks$"),
                self._post_callback,
            ),
            Route(
                "GET",
                re.compile(r"^/administration/v1/notification-callbacks$"),
                self._get_callbacks,
            ),
            Route(
                "DELETE",
                re.compile(r"^/administration/v1/notification-callbacks/(?P<id>[^/]+)$"),
                self._delete_callback,
            ),
            Route("POST", re.compile(r"^/_sandbox/redeliver$"), self._post_redeliver, faults=False),
            Route(
                "GET",
                re.compile(r"^/_sandbox/notifications$"),
                self._get_notifications,
                faults=False,
            ),
            Route(
                "POST",
                re.compile(r"^/_sandbox/data-source$"),
                self._post_data_source,
                faults=False,
            ),
        ]

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.callbacks.clear()
            self.transactions.clear()
            self.orders.clear()
            self.notifications.clear()
            self.undelivered.clear()

    # -- provider-shaped errors ---------------------------------------------------------------

    @staticmethod
    def problem(
        status: int, title: str, description: str, type_: str = "RequestBody"
    ) -> SandboxResponse:
        return SandboxResponse.json(
            status, {"type": type_, "title": title, "code": status, "description": description}
        )

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        return self.problem(
            status,
            "ServiceUnavailable" if status != 500 else "InternalServerError",
            detail or "The accounting system is temporarily unavailable. Please resend later.",
            type_="Server",
        )

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        return SandboxResponse.json(
            429,
            {"statusCode": 429, "message": "Rate limit is exceeded. Try again later."},
            headers,
        )

    # -- auth ---------------------------------------------------------------------------------

    def _refuse_key(self, request: SandboxRequest) -> SandboxResponse | None:
        key = request.header("X-Subscription-Key")
        valid = {str(self.config["subscription_key"]), str(self.config["secondary_key"])}
        if key and key in valid:
            return None
        message = _BAD_KEY if key else _MISSING_KEY
        status = int(self.config["bad_key_status"])
        if status == 401:
            return SandboxResponse.json(401, {"statusCode": 401, "message": message})
        return self.problem(500, "InvalidSubscriptionKey", message, type_="Authorization")

    # -- submissions ----------------------------------------------------------------------------

    def _post_order(self, request: SandboxRequest) -> SandboxResponse:
        return self._submit(request, "order", None)

    def _post_follow_up(self, request: SandboxRequest) -> SandboxResponse:
        kind = KIND_BY_SEGMENT[request.params["segment"]]
        return self._submit(request, kind, unquote(request.params["order"]))

    def _submit(self, request: SandboxRequest, kind: str, order_ref: str | None) -> SandboxResponse:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        business = unquote(request.params["business"])
        customer = unquote(request.params["customer"])
        if business not in _names(self.config["business_codes"]):
            return self.problem(
                404, "BusinessNotFound", f"Business {business} does not exist.", type_="Path"
            )
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return self.problem(
                400,
                "IncorrectMessage",
                f"{_DESCRIPTION} Path: Message: The request body is not valid JSON.",
            )
        errors = validate(kind, body)
        if errors:
            e = errors[0]
            return self.problem(
                400,
                "IncorrectMessage",
                f"{_DESCRIPTION} Path:{e.path} Message: {e.message} "
                f"Line: 1, Position: 1 SchemaId: {e.schema_id}",
            )
        if order_ref is None:
            order_ref = str(body["orderReference"])
        order_key = (business, customer, order_ref)
        txid = request.header("X-Request-ID") or uuid.uuid4().hex
        with self.lock:
            txn = self.transactions.get(txid)
            if txn is not None and txn.state == "pending":
                # "Subsequent requests with the same request ID might get ignored."
                txn.submissions += 1
                return SandboxResponse.json(200, {"internalRequestId": txn.internal_request_id})
            internal_id = str(uuid.uuid4())
            duplicate = txn is not None and txn.state == "OK"
            if txn is None:
                self.transactions[txid] = Transaction(
                    id=txid,
                    state="pending",
                    internal_request_id=internal_id,
                    kind=kind,
                    order=order_key,
                )
            elif not duplicate:  # a resubmission after ERROR_IN_FILE
                txn.state = "pending"
                txn.internal_request_id = internal_id
                txn.kind = kind
                txn.order = order_key
                txn.submissions += 1
            job = _Job(txid, internal_id, kind, order_key, body, duplicate)
        self.later(_float(self.config["callback_delay"]), lambda: self._layer2(job))
        return SandboxResponse.json(200, {"internalRequestId": internal_id})

    # -- layer 2 --------------------------------------------------------------------------------

    def _content_errors(self, kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        rules = set(_names(self.config["content_rules"]))
        out: list[dict[str, Any]] = []
        if "line_item_status" in rules and kind == "order":
            for item in body.get("items") or ():
                if isinstance(item, dict) and not item.get("positionType"):
                    out.append(
                        {
                            "fieldName": "LINEITEMSTATUS",
                            "ErrorDescription": "Field LINEITEMSTATUS must not be empty.",
                        }
                    )
                    break
        if "language_code_lower" in rules:
            for field, name in (
                ("billToAddress", "BILLTOLANGUAGECODE"),
                ("shipToAddress", "SHIPTOLANGUAGECODE"),
            ):
                address = body.get(field)
                language = address.get("language") if isinstance(address, dict) else None
                if isinstance(language, str) and language != language.lower():
                    out.append(
                        {
                            "fieldName": name,
                            "providedValue": language,
                            "ErrorDescription": f"The content of field {name} may only consist "
                            "of lower case letters.",
                        }
                    )
        if "field_length" in rules:
            out.extend(_length_items(body))
        return out

    def _order_errors(self, job: _Job) -> list[dict[str, Any]]:
        ref = job.order[2]
        order = self.orders.get(job.order)
        if job.kind == "order":
            if order is not None and order.confirmed:
                return [
                    {
                        "fieldName": "ORDERREFERENCE",
                        "providedValue": ref,
                        "ErrorDescription": f"Order {ref} already exists.",
                    }
                ]
            return []
        if order is None or not order.confirmed:
            return [
                {
                    "fieldName": "ORDERNO",
                    "providedValue": ref,
                    "ErrorDescription": f"Order {ref} has not been received and processed yet; "
                    "send the order first.",
                }
            ]
        if (
            job.kind == "return"
            and _bool(self.config["return_requires_invoice"])
            and not order.invoices
        ):
            return [
                {
                    "fieldName": "INVOICEREFERENCE",
                    "providedValue": str(job.body.get("invoiceReference") or ""),
                    "ErrorDescription": f"Order {ref} has no invoiced items to return.",
                }
            ]
        return []

    def _apply(self, job: _Job) -> None:
        order = self.orders.setdefault(job.order, Order(key=job.order))
        if job.kind == "order":
            order.confirmed = True
            order.transaction_id = job.transaction_id
        elif job.kind == "invoice":
            order.invoices.append(str(job.body.get("invoiceReference")))
        elif job.kind == "cancellation":
            order.cancellations += 1
        elif job.kind == "goodwill":
            order.goodwills += 1
        elif job.kind == "return":
            order.returns += 1
        elif job.kind == "payment":
            order.payments += 1

    def _layer2(self, job: _Job) -> None:
        with self.lock:
            txn = self.transactions.get(job.transaction_id)
            if txn is None:  # reset in between
                return
            if job.duplicate:
                errors = [
                    {
                        "fieldName": "TRANSACTIONID",
                        "providedValue": job.transaction_id,
                        "ErrorDescription": f"Transaction {job.transaction_id} has already been "
                        "processed.",
                    }
                ]
            else:
                if txn.internal_request_id != job.internal_request_id:
                    return  # superseded (cannot happen: resends while pending are ignored)
                errors = self._content_errors(job.kind, job.body) + self._order_errors(job)
            warnings = [e for e in errors if e.get("status") == "W"]
            errors = [e for e in errors if e.get("status") != "W"]
            if not job.duplicate:
                if errors:
                    txn.state = "ERROR_IN_FILE"
                else:
                    txn.state = "OK"  # processed, W values truncated
                    self._apply(job)
                    self.record_effect(
                        "request_processed",
                        key=job.transaction_id,
                        request_type=REQUEST_TYPE_BY_KIND[job.kind],
                        order=job.order[2],
                        business_code=job.order[0],
                        customer_number=job.order[1],
                        internal_request_id=job.internal_request_id,
                        warnings=[w["fieldName"] for w in warnings],
                    )
            if errors:
                result = "ERROR_IN_FILE"
                details = errors + warnings
            elif warnings:
                result = str(self.config["warnings_result"]).upper()
                details = warnings
            else:
                result = "OK"
                details = [{"ErrorDescription": "The request was successfully validated."}]
            parameters: dict[str, Any] = {
                "requestType": REQUEST_TYPE_BY_KIND[job.kind],
                "transactionId": job.transaction_id,
                "details": {"orderNo": job.order[2], "result": result, "errorDetails": details},
            }
            source = str(self.config["data_source"] or "")
            if source:
                parameters["DataSource"] = source
            payload = {"parameters": parameters, "type": EDI_ERROR_SENT}
            targets = [
                c["callbackUrl"]
                for c in self.callbacks.values()
                if any(t.lower() == EDI_ERROR_SENT.lower() for t in c["notificationTypes"])
            ]
        copies = 2 if _bool(self.config["callback_duplicate"]) else 1
        for url in targets:
            for _ in range(copies):
                self._deliver(url, payload)

    def _deliver(self, url: str, payload: dict[str, Any], *, redelivery: bool = False) -> bool:
        drop_rate = _float(self.config["callback_drop_rate"])
        with self.lock:
            dropped = not redelivery and drop_rate > 0 and self.random.random() < drop_rate
        status = 0 if dropped else self.post_json(url, payload)
        ok = 200 <= status < 300
        with self.lock:
            self.notifications.append(
                {
                    "url": url,
                    "payload": payload,
                    "status": status,
                    "dropped": dropped,
                    "redelivery": redelivery,
                    "at": time.time(),
                }
            )
            if not ok:
                self.undelivered.append((url, payload))
        return ok

    def redeliver(self) -> int:
        """Send every undelivered notification again; returns how many got a 2xx now."""
        with self.lock:
            pending, self.undelivered = self.undelivered, []
        return sum(1 for url, payload in pending if self._deliver(url, payload, redelivery=True))

    # -- callbacks ----------------------------------------------------------------------------

    def register_callback(
        self, url: str, notification_types: list[str] | None = None, description: str = ""
    ) -> dict[str, Any]:
        """What ``POST /administration/v1/notification-callbacks`` does (also for the demo)."""
        entry: dict[str, Any] = {
            "callbackUrl": url,
            "description": description or "Registered callback",
            "id": str(uuid.uuid4()),
            "notificationTypes": list(notification_types or [EDI_ERROR_SENT]),
        }
        with self.lock:
            self.callbacks[entry["id"]] = entry
        return dict(entry)

    def _post_callback(self, request: SandboxRequest) -> SandboxResponse:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        url = data.get("callbackUrl") if isinstance(data, dict) else None
        types = data.get("notificationTypes") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return self.problem(
                400,
                "IncorrectMessage",
                f"{_DESCRIPTION} Path:callbackUrl Message: "
                "Required properties are missing from object: callbackUrl.",
            )
        if types is None:
            types = [EDI_ERROR_SENT]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            return self.problem(
                400,
                "IncorrectMessage",
                f"{_DESCRIPTION} Path:notificationTypes Message: "
                "Invalid type. Expected Array of String.",
            )
        # EDIErrorSent is mandatory: always active for every callback.
        if not any(t.lower() == EDI_ERROR_SENT.lower() for t in types):
            types = [*types, EDI_ERROR_SENT]
        description = data.get("description") if isinstance(data, dict) else None
        entry = self.register_callback(url, types, str(description or ""))
        return SandboxResponse.json(200, entry)

    def _get_callbacks(self, request: SandboxRequest) -> SandboxResponse:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        with self.lock:
            return SandboxResponse.json(200, list(self.callbacks.values()))

    def _delete_callback(self, request: SandboxRequest) -> SandboxResponse:
        refused = self._refuse_key(request)
        if refused is not None:
            return refused
        with self.lock:
            entry = self.callbacks.pop(request.params["id"], None)
        if entry is None:
            return self.problem(404, "NotFound", "No such callback.", type_="Path")
        return SandboxResponse.empty(204)

    # -- control --------------------------------------------------------------------------------

    def _post_redeliver(self, request: SandboxRequest) -> SandboxResponse:
        delivered = self.redeliver()
        with self.lock:
            remaining = len(self.undelivered)
        return SandboxResponse.json(200, {"redelivered": delivered, "remaining": remaining})

    def _post_data_source(self, request: SandboxRequest) -> SandboxResponse:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str):
            return self.problem(400, "IncorrectMessage", "value must be a string", "Sandbox")
        self.config["data_source"] = value
        return SandboxResponse.json(200, {"data_source": value})

    def _get_notifications(self, request: SandboxRequest) -> SandboxResponse:
        with self.lock:
            data = json.loads(json.dumps(self.notifications))
        return SandboxResponse.json(200, {"notifications": data})
