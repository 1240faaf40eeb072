"""A local imitation of the eBillingHub Validation API (seed 003, providers.md section 4).

Routes (both URL styles, API versions ``v1`` and ``v2``; any other version answers 404)::

    POST {prefix}/{v}/ValidationRequest        create a validation request -> 201
    GET  {prefix}/{v}/ValidationRequest/{id}   progress: 202 while running, 200 when done

    prefix = /ebh/validations (new style) or /validations/api (old style)

Checks, in this order: missing ``ProducerId``/``ProviderKey`` -> 400, unknown ``ProviderKey``
-> 401, ``Accept`` other than ``application/json`` / ``*/*`` -> 406, (POST) ``Content-Type``
other than ``application/xml`` -> 415, body over ``max_payload`` -> 413, body that is not XML
or an unknown ``InvoiceType`` -> 400.

Options (``docrelay sandbox ebh --option KEY=VALUE``):

``provider_keys``
    accepted ProviderKey values (a tuple, or a comma-separated string).
``max_payload``
    largest accepted body in bytes (413 above).
``polls_until_done``
    how many GETs answer 202 (Status 1, then 2) before the result (200, Status 4).
``seconds_until_done``
    if set, progress is by time instead: Status 1 for the first half, 2 for the second.
``currency_rule``
    when true, an invoice whose ``<currency>`` is not an ISO 4217 code gets a
    ``UBF_MESSAGE`` result "The currency must follow ISO Codes" (as in the seed).
``fail_status3``
    the next N validation requests end with Status 3 (assumption: failed at the
    provider); ``-1`` or ``true`` for all of them.
``poll_faults``
    statuses (300-599; a tuple, or a comma-separated string such as ``"500,400"``) that
    the next GETs of a validation request answer, one each, in order, before any check and
    without advancing the validation; the bodies are eBillingHub's ``{"Message": ...}`` with
    the seed's wording for 400, 401, 406 and 500. 200 and 202 are the normal answers (see
    ``polls_until_done``). Counted in ``faults_injected["poll"]``.
"""

from __future__ import annotations

import hashlib
import http
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

__all__ = ["INVOICE_TYPES", "ISO_CURRENCIES", "EbhSandbox"]

#: ``InvoiceType`` header values and the numbers the sandbox reports in ``InvoiceType``.
#: The real numeric mapping is not documented (assumption: MultipleInvoiceUBF = 3, because
#: the seed's UBF currency example carries ``InvoiceType: 3``).
INVOICE_TYPES: Mapping[str, int] = {
    "ESF": 1,
    "TimeEntryInvoice": 2,
    "MultipleInvoiceUBF": 3,
    "TimeEntryESF": 4,
}

#: Active ISO 4217 alphabetic codes (enough for the currency rule).
_ISO_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR
    ZMW ZWG
"""
ISO_CURRENCIES = frozenset(_ISO_CODES.split())

_PREFIX = r"(?P<prefix>/ebh/validations|/validations/api)/(?P<version>[^/]+)"
_VERSIONS = ("v1", "v2")
_GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_UNEXPECTED = "An unexpected error occurred. Please, contact the support team."

#: The seed's words for the documented error statuses of the GET (seed 003).
_POLL_MESSAGES: Mapping[int, str] = {
    400: "The request was incorrectly formatted, missing a required header or parameters "
    "were invalid.",
    401: "The Provider Key is not authorized.",
    404: "The validation request was not found.",
    406: "Provided Accept HTTP Header is not supported.",
}

_CURRENCY_RULE_PATH = (
    "UbfValidation_Ledes_standard.Invoice.invoice_UBF.Validate_currency.Validate_currency"
)
_ESF_CURRENCY_RULE_PATH = "EsfValidation.Invoice.invoice_ESF.Validate_currency"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int((ts % 1) * 100):02d}Z"
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@attrs.define
class ValidationRequest:
    """What the sandbox keeps per validation request."""

    id: str
    producer: str
    invoice_type: str
    version: str
    post_time: float
    results: list[dict[str, str]]
    fails: bool
    body_sha256: str
    start_time: float | None = None
    end_time: float | None = None
    status: int = 1
    polls: int = 0

    def to_json(self, base_url: str, prefix: str) -> dict[str, Any]:
        done = self.status in (3, 4)
        out: dict[str, Any] = {
            "Id": self.id,
            "Status": self.status,
            "InvoiceType": INVOICE_TYPES[self.invoice_type],
            "ValidationMessage": None,
            "PostTime": _iso(self.post_time),
            "StartTime": _iso(self.start_time),
            "EndTime": _iso(self.end_time),
            "ValidationResults": list(self.results) if self.status == 4 else [],
        }
        if self.status == 4:
            out["ValidationMessage"] = "Validation Complete"
            out["ValidatedInvoiceUrl"] = (
                f"{base_url}{prefix}/{self.version}/ValidationRequest/{self.id}"
            )
        elif done:
            out["ValidationMessage"] = "Validation Failed"
        return out


def currency_results(body: bytes, invoice_type: str) -> list[dict[str, str]]:
    """The sandbox's one validation rule: ``<currency>`` must be an ISO 4217 code.

    Returns one ``UBF_MESSAGE`` result per offending invoice, located like the seed's
    ``Identifier`` (``UBFDocument/consumers/item[@consumerId='…']/invoices/item[@invoiceId='…']
    /currency``) for UBF, and ``payor_orgs/payor_org/invoice[@id='…']/currency`` for eSF.
    """
    try:
        root = ET.fromstring(body)  # noqa: S314 - sandbox input comes from local tests
    except ET.ParseError:
        return []
    results: list[dict[str, str]] = []
    parents: dict[ET.Element, ET.Element] = {c: p for p in root.iter() for c in p}

    def attr_or_child(el: ET.Element, name: str) -> str:
        if el.get(name):
            return str(el.get(name))
        for c in el:
            if _local(c.tag) == name and c.text:
                return c.text.strip()
        return "?"

    for el in root.iter():
        if _local(el.tag).lower() != "currency":
            continue
        code = (el.text or "").strip()
        if code in ISO_CURRENCIES:
            continue
        chain: list[ET.Element] = []
        p = parents.get(el)
        while p is not None:
            chain.append(p)
            p = parents.get(p)
        if invoice_type in ("MultipleInvoiceUBF", "TimeEntryInvoice"):
            invoice = next((c for c in chain if _local(parents.get(c, c).tag) == "invoices"), None)
            consumer = next(
                (c for c in chain if _local(parents.get(c, c).tag) == "consumers"), None
            )
            ident = (
                f"{_local(root.tag)}/consumers/item[@consumerId='"
                f"{attr_or_child(consumer, 'consumerId') if consumer is not None else '?'}']"
                f"/invoices/item[@invoiceId='"
                f"{attr_or_child(invoice, 'invoiceId') if invoice is not None else '?'}']/currency"
            )
            rule = _CURRENCY_RULE_PATH
        else:
            invoice = next((c for c in chain if _local(c.tag) == "invoice"), None)
            inv_id = attr_or_child(invoice, "id") if invoice is not None else "?"
            ident = f"payor_orgs/payor_org/invoice[@id='{inv_id}']/currency"
            rule = _ESF_CURRENCY_RULE_PATH
        results.append(
            {
                "Severity": "UBF_MESSAGE",
                "Identifier": ident,
                "Message": "The currency must follow ISO Codes",
                "RulePath": rule,
            }
        )
    return results


def _invoice_ids(body: bytes) -> list[str]:
    """Invoice numbers found in a UBF (``invoiceId``) or eSF (``invoice/id``) document."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - sandbox input comes from local tests
    except ET.ParseError:
        return []
    out = []
    for parent in root.iter():
        for el in parent:
            name = _local(el.tag)
            if el.get("invoiceId"):
                out.append(str(el.get("invoiceId")))
            elif el.text and (
                name == "invoiceId" or (name == "id" and _local(parent.tag) == "invoice")
            ):
                out.append(el.text.strip())
    return out


class EbhSandbox(Sandbox):
    """The eBillingHub Validation API, with asynchronous validation by polls or seconds."""

    name = "ebh"
    credential_headers = Sandbox.credential_headers | {"providerkey"}
    options: ClassVar[Mapping[str, Any]] = {
        "provider_keys": ("sandbox-provider-key",),
        "max_payload": 5 * 1024 * 1024,
        "polls_until_done": 2,
        "seconds_until_done": None,
        "currency_rule": True,
        "fail_status3": 0,
        "poll_faults": (),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._requests_by_id: dict[str, ValidationRequest] = {}
        self._fail_left = 0
        self._poll_faults: list[int] = []
        self._state_lock = threading.RLock()
        super().__init__(*args, **kwargs)
        self._fail_left = self._fail_count()
        self._poll_faults = self._poll_fault_list()

    # -- options ------------------------------------------------------------------------------

    def _opt_int(self, name: str) -> int:
        value = self.config.get(name)
        if isinstance(value, bool):
            return -1 if value else 0
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on"):
            return -1
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", ""):
            return 0
        return int(value or 0)

    def _fail_count(self) -> int:
        return self._opt_int("fail_status3")

    def _poll_fault_list(self) -> list[int]:
        value = self.config.get("poll_faults") or ()
        items = value.split(",") if isinstance(value, str) else list(value)
        out = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            if not text.isdigit() or not 300 <= int(text) <= 599:
                raise ValueError(
                    f"ebh sandbox option poll_faults takes statuses 300-599, not {text!r}"
                )
            out.append(int(text))
        return out

    def _keys(self) -> set[str]:
        keys = self.config.get("provider_keys") or ()
        if isinstance(keys, str):
            keys = keys.split(",")
        return {str(k).strip() for k in keys if str(k).strip()}

    def _flag(self, name: str) -> bool:
        value = self.config.get(name)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def set_option(self, name: str, value: Any) -> None:
        """Change an option while running (tests); ``fail_status3`` resets its counter."""
        if name not in self.options:
            raise ValueError(f"unknown ebh sandbox option: {name}")
        with self._state_lock:
            self.config[name] = value
            if name == "fail_status3":
                self._fail_left = self._fail_count()
            if name == "poll_faults":
                self._poll_faults = self._poll_fault_list()

    # -- Sandbox API ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("POST", re.compile(rf"^{_PREFIX}/ValidationRequest/?$"), self._post),
            Route("GET", re.compile(rf"^{_PREFIX}/ValidationRequest/(?P<id>[^/]+)/?$"), self._get),
        ]

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self._requests_by_id.clear()
            self._fail_left = self._fail_count()
            self._poll_faults = self._poll_fault_list()

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        data: dict[str, Any] = {"Message": _UNEXPECTED}
        if detail:
            data["Detail"] = detail
        return SandboxResponse.json(status, data, {"OperationId": str(uuid.uuid4())})

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        return SandboxResponse.json(
            429,
            {"Message": "Too many requests. Try again later."},
            {"OperationId": str(uuid.uuid4()), **headers},
        )

    def validation_request(self, request_id: str) -> ValidationRequest | None:
        """The stored validation request (for tests)."""
        with self._state_lock:
            return self._requests_by_id.get(request_id)

    @property
    def validation_requests(self) -> list[ValidationRequest]:
        with self._state_lock:
            return list(self._requests_by_id.values())

    # -- handlers ------------------------------------------------------------------------------

    @staticmethod
    def _answer(
        status: int, data: Any, headers: Mapping[str, str] | None = None
    ) -> SandboxResponse:
        return SandboxResponse.json(
            status, data, {"OperationId": str(uuid.uuid4()), **(headers or {})}
        )

    def _check_headers(self, request: SandboxRequest) -> SandboxResponse | str:
        """Run the documented header checks; the ProducerId when all pass."""
        if request.params.get("version") not in _VERSIONS:
            return self._answer(404, {"Message": "The requested API version was not found."})
        producer = (request.header("ProducerId") or "").strip()
        key = (request.header("ProviderKey") or "").strip()
        if not producer or not key:
            missing = "ProducerId" if not producer else "ProviderKey"
            return self._answer(400, {"Message": f"Missing required header: {missing}."})
        if key not in self._keys():
            return self._answer(401, {"Message": "The Provider Key is not authorized."})
        accept = request.header("Accept")
        if accept is not None and accept.strip():
            types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
            if not types & {"application/json", "*/*"}:
                return self._answer(
                    406, {"Message": "Provided Accept HTTP Header is not supported."}
                )
        return producer

    def _post(self, request: SandboxRequest) -> SandboxResponse:
        checked = self._check_headers(request)
        if isinstance(checked, SandboxResponse):
            return checked
        producer = checked
        ctype = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/xml":
            return self._answer(415, {"Message": "Unsupported Content-Type. Use application/xml."})
        if len(request.body) > int(self.config["max_payload"]):
            return self._answer(413, {"Message": "The request payload is too large."})
        invoice_type = (request.header("InvoiceType") or "MultipleInvoiceUBF").strip()
        if invoice_type not in INVOICE_TYPES:
            return self._answer(
                400,
                {
                    "Message": f"Invalid InvoiceType '{invoice_type[:60]}'. Allowed: "
                    + ", ".join(INVOICE_TYPES)
                    + "."
                },
            )
        try:
            ET.fromstring(request.body)  # noqa: S314 - sandbox input comes from local tests
        except ET.ParseError:
            return self._answer(400, {"Message": "The request body is not well-formed XML."})

        results = (
            currency_results(request.body, invoice_type) if self._flag("currency_rule") else []
        )
        with self._state_lock:
            fails = self._fail_left != 0
            if self._fail_left > 0:
                self._fail_left -= 1
            vr = ValidationRequest(
                id=str(uuid.uuid4()),
                producer=producer,
                invoice_type=invoice_type,
                version=request.params["version"],
                post_time=time.time(),
                results=results,
                fails=fails,
                body_sha256=hashlib.sha256(request.body).hexdigest(),
            )
            self._requests_by_id[vr.id] = vr
            if (
                self._opt_int("polls_until_done") <= 0
                and self.config.get("seconds_until_done") is None
            ):
                self._finish(vr)
        self.record_effect(
            "validation_requested",
            key=vr.id,
            producer=producer,
            invoice_type=invoice_type,
            version=vr.version,
            body_sha256=vr.body_sha256,
            invoice_ids=_invoice_ids(request.body),
            username=request.header("Username"),
        )
        prefix = request.params["prefix"]
        location = f"{self.url}{prefix}/{vr.version}/ValidationRequest/{vr.id}"
        return self._answer(201, vr.to_json(self.url, prefix), {"Location": location})

    def _finish(self, vr: ValidationRequest) -> None:
        now = time.time()
        vr.start_time = vr.start_time or now
        vr.end_time = now
        vr.status = 3 if vr.fails else 4

    def _advance(self, vr: ValidationRequest) -> None:
        """Move a pending validation request on by one poll (or by the clock)."""
        if vr.status in (3, 4):
            return
        seconds = self.config.get("seconds_until_done")
        if seconds is not None:
            elapsed = time.time() - vr.post_time
            if elapsed >= float(seconds):
                self._finish(vr)
            elif elapsed >= float(seconds) / 2:
                vr.status = 2
                vr.start_time = vr.start_time or time.time()
            return
        vr.polls += 1
        if vr.polls > self._opt_int("polls_until_done"):
            self._finish(vr)
        elif vr.polls >= 2:
            vr.status = 2
            vr.start_time = vr.start_time or time.time()

    def _poll_fault(self) -> SandboxResponse | None:
        """The next injected answer of ``poll_faults``, if any is left."""
        with self._state_lock:
            if not self._poll_faults:
                return None
            status = self._poll_faults.pop(0)
        self.count_fault("poll")
        if status >= 500:
            message = _UNEXPECTED
        else:
            message = _POLL_MESSAGES.get(status) or http.HTTPStatus(status).phrase + "."
        return self._answer(status, {"Message": message})

    def _get(self, request: SandboxRequest) -> SandboxResponse:
        fault = self._poll_fault()
        if fault is not None:
            return fault
        checked = self._check_headers(request)
        if isinstance(checked, SandboxResponse):
            return checked
        producer = checked
        request_id = request.params["id"]
        if not _GUID_RE.match(request_id):
            return self._answer(400, {"Message": "The validation request id is invalid."})
        with self._state_lock:
            vr = self._requests_by_id.get(request_id.lower())
            if vr is None or vr.producer != producer:
                return self._answer(404, {"Message": "The validation request was not found."})
            self._advance(vr)
            data = vr.to_json(self.url, request.params["prefix"])
            done = vr.status in (3, 4)
        location = f"{self.url}{request.params['prefix']}/{vr.version}/ValidationRequest/{vr.id}"
        return self._answer(200 if done else 202, data, {"Location": location})
