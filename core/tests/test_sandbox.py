"""The public extension points of :class:`docrelay.sandbox.Sandbox`, over real HTTP on
127.0.0.1: answer post-processing, a lost answer, the OAuth2 token route, the registry of
idempotency keys, masked credential headers, and the fault injection around them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Hashable, Iterator, Mapping
from typing import Any, ClassVar

import attrs
import pytest
import requests
from docrelay.sandbox import (
    OAuthTokenRoute,
    Route,
    Sandbox,
    SandboxRequest,
    SandboxResponse,
    TokenIssuer,
)


class Shop(Sandbox):
    """A small provider: a form token route, bearer-protected orders deduplicated on
    ``Idempotency-Key``, a trace header on every answer, lost answers on demand."""

    name = "shop"
    options: ClassVar[Mapping[str, Any]] = {
        "client_id": "shop-client",
        "client_secret": "shop-secret",
        "token_ttl": 60,
        "lose_first": False,
        "lose_before": 0,
    }
    credential_headers = Sandbox.credential_headers | {"x-shop-key"}
    token_route = OAuthTokenRoute(path="/auth/token", body="form")

    def routes(self) -> list[Route]:
        return [Route("POST", re.compile(r"^/orders$"), self._order)]

    def before_request(self, request: SandboxRequest) -> None:
        if request.path == "/orders" and int(self.config["lose_before"]) > 0:
            self.config["lose_before"] = int(self.config["lose_before"]) - 1
            self.drop_answer()

    def finish_response(
        self, request: SandboxRequest, response: SandboxResponse
    ) -> SandboxResponse:
        return attrs.evolve(response, headers={**response.headers, "X-Trace": "t-1"})

    def duplicate_response(
        self, request: SandboxRequest, key: Hashable, first: Any
    ) -> SandboxResponse:
        return SandboxResponse.json(409, {"message": "seen", "order": first})

    def check_token_request(
        self, fields: Mapping[str, Any], request: SandboxRequest
    ) -> SandboxResponse | None:
        if fields.get("scope") not in (None, "orders"):
            return SandboxResponse.json(400, {"error": "invalid_scope"})
        return None

    def _order(self, request: SandboxRequest) -> SandboxResponse:
        if self.bearer(request) is None:
            return SandboxResponse.json(401, {"message": "no token"})
        key = request.header("Idempotency-Key") or ""
        with self.lock:
            duplicate = self.duplicate_of(request, key)
            if duplicate is not None:
                return duplicate
            order = uuid.uuid4().hex
            self.idempotency.remember(key, order)
            self.record_effect("order", key, order=order)
        if self.config["lose_first"]:
            self.config["lose_first"] = False
            self.drop_answer()
        return SandboxResponse.json(201, {"order": order})


@pytest.fixture
def shop() -> Iterator[Shop]:
    with Shop() as sandbox:
        yield sandbox


def _token(shop: Shop, **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": "shop-client"}
    data["client_secret"] = "shop-secret"
    data.update(form)
    return requests.post(shop.url + "/auth/token", data=data, timeout=5)


def _order(shop: Shop, token: str, key: str) -> requests.Response:
    return requests.post(
        shop.url + "/orders",
        json={},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key, "X-Shop-Key": "k"},
        timeout=5,
    )


def test_token_route_issues_tokens_that_bearer_accepts(shop: Shop) -> None:
    """The declared route hands out a token for the configured client, with its lifetime;
    the token opens the protected route, a made-up one does not."""
    r = _token(shop)
    assert r.status_code == 200
    body = r.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 60)
    assert r.headers["X-Trace"] == "t-1"
    assert _order(shop, body["access_token"], "k1").status_code == 201
    assert _order(shop, "sbx-made-up", "k2").status_code == 401
    assert shop.tokens.issued == 1
    assert shop.tokens.issued_tokens() == [body["access_token"]]


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"scope": "admin"}, 400, "invalid_scope"),
    ],
)
def test_token_route_refusals(shop: Shop, form: dict[str, str], status: int, error: str) -> None:
    r = _token(shop, **form)
    assert (r.status_code, r.json()) == (status, {"error": error})
    assert shop.tokens.issued == 0


def test_token_route_refuses_a_body_of_the_wrong_kind(shop: Shop) -> None:
    r = requests.post(shop.url + "/auth/token", json={"client_id": "shop-client"}, timeout=5)
    assert (r.status_code, r.json()) == (400, {"error": "invalid_request"})


def test_token_ttl_fault_and_expiry(shop: Shop) -> None:
    """``token-ttl`` changes the lifetime handed out; ``expire_all`` ends every token."""
    shop.set_faults(["token-ttl:5"])
    token = _token(shop).json()
    assert token["expires_in"] == 5
    shop.tokens.expire_all()
    assert _order(shop, token["access_token"], "k1").status_code == 401
    shop.tokens = TokenIssuer(60)  # a fresh issuer: the provider forgot every token
    assert shop.tokens.issued_tokens() == []


def test_idempotency_registry_answers_a_repeated_key_as_the_provider_does(shop: Shop) -> None:
    token = _token(shop).json()["access_token"]
    first = _order(shop, token, "k1")
    again = _order(shop, token, "k1")
    assert first.status_code == 201
    assert (again.status_code, again.json()) == (
        409,
        {"message": "seen", "order": first.json()["order"]},
    )
    assert len(shop.effects) == 1
    assert "k1" in shop.idempotency
    shop.reset()
    assert len(shop.idempotency) == 0
    assert _order(shop, token, "k1").status_code == 201


def test_drop_answer_processes_the_request_and_loses_its_answer(shop: Shop) -> None:
    token = _token(shop).json()["access_token"]
    shop.config["lose_first"] = True
    with pytest.raises(requests.ConnectionError):
        _order(shop, token, "k1")
    assert [e["key"] for e in shop.effects] == ["k1"]  # processed
    assert shop.faults_injected == {"drop": 1}
    assert shop.requests[-1]["fault"] == "drop"
    assert _order(shop, token, "k1").status_code == 409  # the resend meets the first one


def test_drop_answer_in_before_request_loses_the_request_unhandled(shop: Shop) -> None:
    token = _token(shop).json()["access_token"]
    shop.config["lose_before"] = 1
    with pytest.raises(requests.ConnectionError):
        _order(shop, token, "k1")
    assert shop.effects == []
    assert _order(shop, token, "k1").status_code == 201


def test_credential_headers_are_masked_in_the_request_log(shop: Shop) -> None:
    token = _token(shop).json()["access_token"]
    _order(shop, token, "k1")
    [logged] = [r for r in shop.requests if r["path"] == "/orders"]
    headers = {k.lower(): v for k, v in logged["headers"].items()}
    assert headers["authorization"] == "***"
    assert headers["x-shop-key"] == "***"
    assert headers["idempotency-key"] == "k1"


@pytest.mark.parametrize(
    ("spec", "status", "fault"),
    [("error*1:503", 503, "error"), ("throttle*1:2", 429, "throttle"), ("slow*1:0", 201, "slow")],
)
def test_faults_still_apply_around_the_routes(
    shop: Shop, spec: str, status: int, fault: str
) -> None:
    """Injected answers go through ``finish_response`` too; the token route has no faults."""
    shop.set_faults([spec])
    token = _token(shop).json()["access_token"]
    r = _order(shop, token, "k1")
    assert r.status_code == status
    assert r.headers["X-Trace"] == "t-1"
    assert shop.faults_injected == {fault: 1}
    assert shop.requests[-1]["fault"] == fault


def test_drop_fault_and_drip_fault(shop: Shop) -> None:
    token = _token(shop).json()["access_token"]
    shop.set_faults(["drop*1"])
    with pytest.raises(requests.ConnectionError):
        _order(shop, token, "k1")
    assert len(shop.effects) == 1
    shop.set_faults(["drip*1:0.001"])
    r = _order(shop, token, "k2")
    assert r.status_code == 201
    assert "order" in r.json()
    assert shop.faults_injected == {"drop": 1, "drip": 1}


def test_the_base_names_no_provider_header() -> None:
    """Only ``Authorization`` is masked unless a provider's sandbox says otherwise."""
    assert frozenset({"authorization"}) == Sandbox.credential_headers
    assert Sandbox.token_route is None
