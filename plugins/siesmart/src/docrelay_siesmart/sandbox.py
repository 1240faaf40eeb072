"""A local SieSmart imitation: Auth0-style token endpoint, proposals with ETag/If-Match.

Behaviour (seed 002 and providers.md section 3/8; where the public material is silent the
choice is marked *assumed*):

- ``POST /oauth/token``: JSON ``{audience, grant_type, client_id, client_secret}`` ->
  ``{"access_token", "token_type": "Bearer", "expires_in": 86400}`` (honours the
  ``token-ttl`` fault). Wrong client or secret -> 401, wrong audience -> 403 (Auth0 style
  ``{"error", "error_description"}``). Not subject to fault injection (so ``throttle*1``
  hits the proposal API); ``token_error`` answers every token request with that status.
- Every response carries ``X-B2B-TRACE-ID`` (unique per request); every error body is the
  assumed Error object ``{"code", "message", "traceId"}`` with the same id.
- ``POST /proposals`` creates (no If-Match needed) -> 200, the proposal with its ``id`` and an
  ``ETag`` header (an ISO date-time string that changes on every modification).
- ``GET /proposals/{id}`` -> 200 + the current ``ETag``.
- ``PUT /proposals/{id}`` and ``POST /proposals/{id}/decision`` need ``If-Match``: missing ->
  412 "For POST requests, the 'If-Match' header is missing" (the method's name in it),
  stale -> 412 (assumed); success -> a new ETag.
- ``GET /proposals/search?label=...`` (assumed: search by label) -> ``{"content": [...]}``.
- A sliding window of ``rate_limit`` requests per ``rate_window`` seconds per client (the
  token's client id, else the caller's IP) -> 429 beyond (no ``Retry-After`` unless
  ``retry_after`` is set).
- ``POST /_sandbox/touch/{id}`` modifies a proposal as someone else would (new ETag);
  ``POST /_sandbox/concurrent-edits`` ``{"count": n}`` makes the next *n* modifying calls meet
  a concurrent modification just before they are handled (a real stale ETag);
  ``POST /_sandbox/drop-if-match`` ``{"count": n}`` makes the next *n* modifying calls arrive
  without their ``If-Match`` header (as if a proxy dropped it: 412 "header is missing", with
  nobody else changing the proposal).

Effects: ``proposal_created`` (key = proposal id, ``label``), ``proposal_updated``,
``decision_submitted`` (key = proposal id), exactly once per business change.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from docrelay.sandbox import (
    OAuthTokenRoute,
    Route,
    Sandbox,
    SandboxRequest,
    SandboxResponse,
    SlidingWindow,
    TokenIssuer,
)

__all__ = ["SieSmartSandbox"]

TRACE_HEADER = "X-B2B-TRACE-ID"
AUDIENCE = "https://api.siesmart.com/b2b"

#: Offices known to the sandbox (id -> country). GB offices need no sales contact.
OFFICES: Mapping[str, Mapping[str, str]] = {
    "OFF-DE-1001": {"name": "Siemens Finance Munich (Introducer Desk)", "country": "DE"},
    "OFF-DE-1002": {"name": "Siemens Finance Berlin", "country": "DE"},
    "OFF-GB-2001": {"name": "Siemens Financial Services Stoke Poges", "country": "GB"},
}

_DECISION_FIELDS = (
    "commentToRiskAnalyst",
    "siemensMayContactCustomer",
    "siemensMayRequestCreditData",
    "prelease",
)


def _flag(value: Any) -> bool:
    """An option that may come as text from ``--option KEY=VALUE``."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _error(
    status: int,
    code: str,
    message: str,
    trace: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> SandboxResponse:
    return SandboxResponse.json(
        status, {"code": code, "message": message, "traceId": trace, **extra}, headers
    )


class SieSmartSandbox(Sandbox):
    """SieSmart B2B API imitation (see the module docstring).

    Options: ``client_id``/``client_secret``/``audience`` (the one accepted credential),
    ``token_ttl`` (86400), ``rate_limit`` (100) per ``rate_window`` (60 s), ``retry_after``
    (``None``: no Retry-After on the rate limiter's 429; a number of seconds to send one),
    ``read_only`` (``False``; ``True``: every modifying call answers 403), ``token_error``
    (0; a status such as 503 or 401 answers every token request with it),
    ``concurrent_edits`` (0; see ``/_sandbox/concurrent-edits``), ``drop_if_match`` (0; see
    ``/_sandbox/drop-if-match``), ``decision_status``
    (``"PENDING"``: the decisionStatus after a submit, *assumed*).
    """

    name: ClassVar[str] = "siesmart"
    token_route = OAuthTokenRoute(path="/oauth/token", body="json")
    options: ClassVar[Mapping[str, Any]] = {
        "client_id": "sbx-siesmart-client",
        "client_secret": "sbx-siesmart-secret",
        "audience": AUDIENCE,
        "token_ttl": 86400,
        "rate_limit": 100,
        "rate_window": 60,
        "retry_after": None,
        "read_only": False,
        "token_error": 0,
        "concurrent_edits": 0,
        "drop_if_match": 0,
        "lose_requests": 0,
        "decision_status": "PENDING",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tls = threading.local()
        self._state_lock = threading.RLock()
        self.proposals: dict[str, dict[str, Any]] = {}
        self.etags: dict[str, str] = {}
        self._seq = 0
        self._last_etag = ""
        super().__init__(*args, **kwargs)
        self.window = SlidingWindow(
            int(self.config["rate_limit"]), float(self.config["rate_window"])
        )
        self._concurrent = int(self.config["concurrent_edits"])
        self._drop_if_match = int(self.config["drop_if_match"])
        self._lose = int(self.config["lose_requests"])

    # -- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        pid = r"(?P<pid>[A-Za-z0-9._\-]+)"
        return [
            Route("GET", re.compile(r"^/proposals/search$"), self._search),
            Route("POST", re.compile(r"^/proposals$"), self._create),
            Route("GET", re.compile(rf"^/proposals/{pid}$"), self._get),
            Route("PUT", re.compile(rf"^/proposals/{pid}$"), self._update),
            Route("POST", re.compile(rf"^/proposals/{pid}/decision$"), self._decision),
            Route("POST", re.compile(rf"^/_sandbox/touch/{pid}$"), self._touch, faults=False),
            Route(
                "POST",
                re.compile(r"^/_sandbox/concurrent-edits$"),
                self._post_concurrent,
                faults=False,
            ),
            Route(
                "POST",
                re.compile(r"^/_sandbox/drop-if-match$"),
                self._post_drop_if_match,
                faults=False,
            ),
        ]

    # -- base-class extension points ------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        with self._state_lock:
            self.proposals.clear()
            self.etags.clear()
            self._seq = 0
            self._concurrent = int(self.config["concurrent_edits"])
            self._drop_if_match = int(self.config["drop_if_match"])
            self._lose = int(self.config["lose_requests"])
        self.tokens = TokenIssuer(float(self.config["token_ttl"]))
        self.window = SlidingWindow(
            int(self.config["rate_limit"]), float(self.config["rate_window"])
        )

    def before_request(self, request: SandboxRequest) -> None:
        """A fresh ``X-B2B-TRACE-ID`` per request; ``lose_requests`` loses proposal calls."""
        self._tls.trace = str(uuid.uuid4())
        if request.path.startswith("/proposals"):
            with self._state_lock:
                lose = self._lose > 0
                if lose:
                    self._lose -= 1
            if lose:  # the connection breaks before the request is handled
                self.drop_answer()

    def finish_response(
        self, request: SandboxRequest, response: SandboxResponse
    ) -> SandboxResponse:
        """Every response carries the trace id; error bodies carry the same id."""
        trace = self.trace
        headers = {**response.headers, TRACE_HEADER: trace}
        body = response.body
        if response.status >= 400:
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            if isinstance(data, dict) and "traceId" not in data:
                data.setdefault("code", f"HTTP_{response.status}")
                data["traceId"] = trace
                body = json.dumps(data).encode()
        return attrs.evolve(response, headers=headers, body=body)

    @property
    def trace(self) -> str:
        return str(getattr(self._tls, "trace", "") or uuid.uuid4())

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        message = {500: "Internal server error", 503: "Service unavailable"}.get(
            status, "Internal server error"
        )
        code = {503: "SERVICE_UNAVAILABLE"}.get(status, "INTERNAL_SERVER_ERROR")
        return _error(status, code, message, self.trace)

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        return _error(
            429, "TOO_MANY_REQUESTS", "The request rate limit has been reached", self.trace, headers
        )

    # -- helpers --------------------------------------------------------------------------------

    def _new_etag(self) -> str:
        """An ISO date-time string, strictly increasing (the version of a proposal)."""
        with self._state_lock:
            now = dt.datetime.now(dt.UTC)
            value = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if value <= self._last_etag:
                last = dt.datetime.strptime(self._last_etag, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=dt.UTC
                )
                value = (last + dt.timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            self._last_etag = value
            return value

    def _guard(self, request: SandboxRequest) -> tuple[str | None, SandboxResponse | None]:
        """Rate limit, then authentication. Returns (client, error response or None)."""
        client = self.bearer(request)
        wait = self.window.hit(client or request.client)
        if wait is not None:
            ra = self.config["retry_after"]
            headers = {} if ra in (None, "", "none") else {"Retry-After": str(ra)}
            return client, _error(
                429,
                "TOO_MANY_REQUESTS",
                "The request rate limit has been reached",
                self.trace,
                headers,
            )
        if client is None:
            return None, _error(
                401, "UNAUTHORIZED", "The auth token is invalid or not present", self.trace
            )
        return client, None

    def _modify_guard(
        self, request: SandboxRequest, pid: str
    ) -> tuple[dict[str, Any] | None, SandboxResponse | None]:
        """Checks every modifying call: 403 read-only, 404 unknown, 412 If-Match."""
        if _flag(self.config["read_only"]):
            return None, _error(
                403,
                "FORBIDDEN",
                "The requested operation is not authorized for your token",
                self.trace,
            )
        with self._state_lock:
            proposal = self.proposals.get(pid)
            if proposal is None:
                return None, _error(
                    404, "PROPOSAL_NOT_FOUND", f"Proposal {pid} not found", self.trace
                )
            if self._concurrent > 0:
                self._concurrent -= 1
                self._modified(pid)
            if_match = request.header("If-Match")
            if self._drop_if_match > 0:
                self._drop_if_match -= 1
                if_match = None  # lost on the way (a proxy), nobody changed the proposal
            if not if_match:
                return None, _error(
                    412,
                    "PRECONDITION_FAILED",
                    f"For {request.method} requests, the 'If-Match' header is missing",
                    self.trace,
                )
            if if_match.strip().strip('"') != self.etags[pid]:
                return None, _error(
                    412,
                    "PRECONDITION_FAILED",
                    "The 'If-Match' header does not match the current version of the proposal",
                    self.trace,
                )
            return proposal, None

    def _modified(self, pid: str) -> str:
        with self._state_lock:
            etag = self._new_etag()
            self.etags[pid] = etag
            self.proposals[pid]["updated"] = etag
            return etag

    def _proposal_response(self, pid: str) -> SandboxResponse:
        with self._state_lock:
            data = json.loads(json.dumps(self.proposals[pid]))
            etag = self.etags[pid]
        return SandboxResponse.json(200, data, {"ETag": etag})

    @staticmethod
    def _json_object(request: SandboxRequest) -> dict[str, Any] | None:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def _validate(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        office = data.get("officeId")
        if not office:
            errors.append({"field": "officeId", "code": "NotNull", "message": "must not be null"})
        elif office not in OFFICES:
            errors.append(
                {
                    "field": "officeId",
                    "code": "UnknownOffice",
                    "message": "Office not found",
                    "rejectedValue": office,
                }
            )
        elif OFFICES[str(office)]["country"] != "GB" and not data.get("salesContactId"):
            errors.append(
                {
                    "field": "salesContactId",
                    "code": "NotNull",
                    "message": "must not be null (mandatory except for GB offices)",
                }
            )
        if "assets" in data and not isinstance(data["assets"], list):
            errors.append({"field": "assets", "code": "Type", "message": "must be an array"})
        for i, asset in enumerate(data.get("assets") or []):
            if not isinstance(asset, dict) or not asset.get("iacCode"):
                errors.append(
                    {
                        "field": f"assets[{i}].iacCode",
                        "code": "NotNull",
                        "message": "must not be null",
                    }
                )
        calc = data.get("calculation")
        if calc is not None and not isinstance(calc, dict):
            errors.append({"field": "calculation", "code": "Type", "message": "must be an object"})
        return errors

    # -- handlers -------------------------------------------------------------------------------

    def token_response(self, request: SandboxRequest) -> SandboxResponse:
        """``token_error`` answers every token request with that status."""
        status = int(self.config["token_error"] or 0)
        if status:
            return SandboxResponse.json(
                status,
                {
                    "error": "server_error" if status >= 500 else "access_denied",
                    "error_description": "token endpoint unavailable"
                    if status >= 500
                    else "Unauthorized",
                },
            )
        return super().token_response(request)

    def token_refusal(self, error: str, request: SandboxRequest) -> SandboxResponse:
        if error == "invalid_request":
            return SandboxResponse.json(
                400, {"error": "invalid_request", "error_description": "JSON body required"}
            )
        if error == "unsupported_grant_type":
            return SandboxResponse.json(
                403,
                {"error": "unauthorized_client", "error_description": "Grant type not allowed"},
            )
        return SandboxResponse.json(
            401, {"error": "access_denied", "error_description": "Unauthorized"}
        )

    def check_token_request(
        self, fields: Mapping[str, Any], request: SandboxRequest
    ) -> SandboxResponse | None:
        if fields.get("audience") != self.config["audience"]:
            return SandboxResponse.json(
                403,
                {
                    "error": "access_denied",
                    "error_description": "Service not enabled within domain: "
                    + str(fields.get("audience"))[:200],
                },
            )
        return None

    def token_grant(
        self, fields: Mapping[str, Any], token: str, lifetime: float
    ) -> SandboxResponse:
        return SandboxResponse.json(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": int(lifetime)}
        )

    def _create(self, request: SandboxRequest) -> SandboxResponse:
        _client, err = self._guard(request)
        if err is not None:
            return err
        if _flag(self.config["read_only"]):
            return _error(
                403,
                "FORBIDDEN",
                "The requested operation is not authorized for your token",
                self.trace,
            )
        data = self._json_object(request)
        if data is None:
            return _error(400, "BAD_REQUEST", "Malformed JSON request body", self.trace)
        errors = self._validate(data)
        if errors:
            return _error(
                422, "VALIDATION_FAILED", "Proposal is invalid", self.trace, errors=errors
            )
        with self._state_lock:
            self._seq += 1
            pid = f"{4_700_000 + self._seq}"
            proposal = {
                k: data.get(k)
                for k in (
                    "officeId",
                    "salesContactId",
                    "label",
                    "specialConditionText",
                    "scheduleAssetsDescription",
                    "customer",
                    "assets",
                    "calculation",
                )
            }
            proposal.update(
                {
                    "id": pid,
                    "proposalNo": f"SFS-{pid}",
                    "workflowStatus": "DRAFT",
                    "decision": {"decisionStatus": "NOT_AVAILABLE"},
                    "created": None,
                }
            )
            self.proposals[pid] = proposal
            etag = self._modified(pid)
            proposal["created"] = etag
            self.record_effect("proposal_created", key=pid, label=proposal.get("label"))
        return self._proposal_response(pid)

    def _get(self, request: SandboxRequest) -> SandboxResponse:
        _client, err = self._guard(request)
        if err is not None:
            return err
        pid = request.params["pid"]
        with self._state_lock:
            if pid not in self.proposals:
                return _error(404, "PROPOSAL_NOT_FOUND", f"Proposal {pid} not found", self.trace)
            return self._proposal_response(pid)

    def _update(self, request: SandboxRequest) -> SandboxResponse:
        _client, err = self._guard(request)
        if err is not None:
            return err
        pid = request.params["pid"]
        data = self._json_object(request)
        with self._state_lock:
            proposal, err = self._modify_guard(request, pid)
            if err is not None:
                return err
            assert proposal is not None
            if data is None:
                return _error(400, "BAD_REQUEST", "Malformed JSON request body", self.trace)
            merged = {**proposal, **{k: v for k, v in data.items() if k not in ("id", "decision")}}
            errors = self._validate(merged)
            if errors:
                return _error(
                    422, "VALIDATION_FAILED", "Proposal is invalid", self.trace, errors=errors
                )
            proposal.update(merged)
            etag = self._modified(pid)
            self.record_effect("proposal_updated", key=pid, etag=etag)
            return self._proposal_response(pid)

    def _decision(self, request: SandboxRequest) -> SandboxResponse:
        _client, err = self._guard(request)
        if err is not None:
            return err
        pid = request.params["pid"]
        data = self._json_object(request)
        with self._state_lock:
            proposal, err = self._modify_guard(request, pid)
            if err is not None:
                return err
            assert proposal is not None
            if data is None:
                return _error(400, "BAD_REQUEST", "Malformed JSON request body", self.trace)
            violations = []
            for part, code in (
                ("customer", "CUSTOMER_MISSING"),
                ("assets", "ASSETS_MISSING"),
                ("calculation", "CALCULATION_MISSING"),
            ):
                if not proposal.get(part):
                    violations.append(
                        {"code": code, "userMessage": f"The proposal has no {part} yet"}
                    )
            if proposal["decision"].get("decisionStatus") not in (None, "NOT_AVAILABLE"):
                violations.append(
                    {
                        "code": "DECISION_ALREADY_REQUESTED",
                        "userMessage": "A decision has already been requested for this proposal",
                    }
                )
            for name in ("siemensMayContactCustomer", "siemensMayRequestCreditData", "prelease"):
                if name in data and not isinstance(data[name], bool):
                    violations.append(
                        {"code": "INVALID_VALUE", "userMessage": f"{name} must be true or false"}
                    )
            if violations:
                return _error(
                    422,
                    "DECISION_NOT_ALLOWED",
                    "The decision request is not allowed",
                    self.trace,
                    preconditionViolations=violations,
                )
            requested = self._new_etag()
            proposal["decision"] = {
                "decisionStatus": self.config["decision_status"],
                "decisionRequestedDate": requested,
                "decisionDate": None,
                "decisionValidUntilDate": None,
                "comment": None,
                "condition": None,
                "reason": None,
                **{k: data.get(k) for k in _DECISION_FIELDS},
            }
            proposal["workflowStatus"] = "SUBMITTED"
            self._modified(pid)
            self.record_effect("decision_submitted", key=pid, request=dict(data))
            return self._proposal_response(pid)

    def _search(self, request: SandboxRequest) -> SandboxResponse:
        _client, err = self._guard(request)
        if err is not None:
            return err
        label = request.arg("label")
        office = request.arg("office-id")
        try:
            size = max(1, min(int(request.arg("size") or 100), 100))
        except ValueError:
            return _error(400, "BAD_REQUEST", "size must be a number", self.trace)
        with self._state_lock:
            found = [
                {
                    "id": pid,
                    "proposalNo": p.get("proposalNo"),
                    "label": p.get("label"),
                    "officeId": p.get("officeId"),
                    "workflowStatus": p.get("workflowStatus"),
                    "updated": self.etags[pid],
                }
                for pid, p in self.proposals.items()
                if (label is None or p.get("label") == label)
                and (office is None or p.get("officeId") == office)
            ]
        found.sort(key=lambda p: str(p["updated"]), reverse=True)
        return SandboxResponse.json(
            200, {"content": found[:size], "totalElements": len(found), "size": size}
        )

    # -- sandbox controls -----------------------------------------------------------------------

    def touch(self, pid: str) -> str:
        """Modify proposal *pid* as another user would; returns the new ETag."""
        with self._state_lock:
            if pid not in self.proposals:
                raise KeyError(pid)
            self.proposals[pid]["specialConditionText"] = (
                str(self.proposals[pid].get("specialConditionText") or "") + " (edited)"
            ).strip()
            return self._modified(pid)

    def lose_requests(self, count: int) -> None:
        """The next *count* proposal requests are lost before they are handled (the
        connection closes without an answer and without any effect)."""
        with self._state_lock:
            self._lose = int(count)

    def schedule_concurrent_edits(self, count: int) -> None:
        """The next *count* modifying calls meet a concurrent modification first."""
        with self._state_lock:
            self._concurrent = int(count)

    def drop_if_match(self, count: int) -> None:
        """The next *count* modifying calls arrive without their If-Match header."""
        with self._state_lock:
            self._drop_if_match = int(count)

    def _touch(self, request: SandboxRequest) -> SandboxResponse:
        try:
            etag = self.touch(request.params["pid"])
        except KeyError:
            return _error(404, "PROPOSAL_NOT_FOUND", "Proposal not found", self.trace)
        return SandboxResponse.json(200, {"etag": etag}, {"ETag": etag})

    def _post_concurrent(self, request: SandboxRequest) -> SandboxResponse:
        data = self._json_object(request) or {}
        try:
            count = int(data.get("count", 1))
        except (TypeError, ValueError):
            return _error(400, "BAD_REQUEST", "count must be a number", self.trace)
        self.schedule_concurrent_edits(count)
        return SandboxResponse.json(200, {"concurrent_edits": count})

    def _post_drop_if_match(self, request: SandboxRequest) -> SandboxResponse:
        data = self._json_object(request) or {}
        try:
            count = int(data.get("count", 1))
        except (TypeError, ValueError):
            return _error(400, "BAD_REQUEST", "count must be a number", self.trace)
        self.drop_if_match(count)
        return SandboxResponse.json(200, {"drop_if_match": count})
