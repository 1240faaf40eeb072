"""The SieSmart sandbox over real HTTP on 127.0.0.1 (requests, no mocks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from docrelay_siesmart.sandbox import AUDIENCE, SieSmartSandbox

PROPOSAL = {
    "officeId": "OFF-DE-1001",
    "salesContactId": "SC-DE-0417",
    "label": "Test proposal",
    "customer": {"companyName": "Kessler GmbH"},
    "assets": [{"iacCode": "IAC-2210", "description": "Excavator"}],
    "calculation": {"termMonths": 48},
}
DECISION = {
    "commentToRiskAnalyst": "good customer",
    "siemensMayContactCustomer": True,
    "siemensMayRequestCreditData": False,
    "prelease": False,
}


@pytest.fixture(scope="module")
def _server() -> Iterator[SieSmartSandbox]:
    sbx = SieSmartSandbox(seed=1)
    sbx.start()
    try:
        yield sbx
    finally:
        sbx.stop()


@pytest.fixture
def sandbox(_server: SieSmartSandbox) -> SieSmartSandbox:
    """One server per module (stopping one costs 0.5 s), reset before each test."""
    _server.config.update(SieSmartSandbox.options)
    _server.set_faults([])
    _server.reset()
    return _server


def token(sbx: SieSmartSandbox, **override: Any) -> requests.Response:
    body = {
        "audience": AUDIENCE,
        "grant_type": "client_credentials",
        "client_id": sbx.config["client_id"],
        "client_secret": sbx.config["client_secret"],
        **override,
    }
    return requests.post(sbx.url + "/oauth/token", json=body, timeout=5)


@pytest.fixture
def auth(sandbox: SieSmartSandbox) -> dict[str, str]:
    r = token(sandbox)
    assert r.status_code == 200
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def create(sbx: SieSmartSandbox, auth: dict[str, str], **fields: Any) -> requests.Response:
    return requests.post(
        sbx.url + "/proposals", json={**PROPOSAL, **fields}, headers=auth, timeout=5
    )


def test_token_endpoint(sandbox: SieSmartSandbox) -> None:
    """Auth0-style JSON body -> Bearer token valid 86400 s."""
    r = token(sandbox)
    assert r.status_code == 200
    data = r.json()
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 86400
    assert data["access_token"]


@pytest.mark.parametrize(
    ("override", "status"),
    [
        ({"client_secret": "wrong"}, 401),
        ({"client_id": "someone-else"}, 401),
        ({"audience": "https://api.example.com"}, 403),
        ({"grant_type": "password"}, 403),
    ],
)
def test_token_refusals(sandbox: SieSmartSandbox, override: dict[str, str], status: int) -> None:
    r = token(sandbox, **override)
    assert r.status_code == status
    assert r.json()["error"]
    assert "access_token" not in r.json()


def test_token_ttl_fault(sandbox: SieSmartSandbox) -> None:
    sandbox.set_faults(["token-ttl:5"])
    assert token(sandbox).json()["expires_in"] == 5


def test_token_error_option(sandbox: SieSmartSandbox) -> None:
    sandbox.config["token_error"] = 503
    assert token(sandbox).status_code == 503


def test_create_get_etag_and_effect(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """Create without If-Match -> 200 + id + ETag (ISO date-time); GET -> same ETag."""
    r = create(sandbox, auth)
    assert r.status_code == 200
    pid = r.json()["id"]
    etag = r.headers["ETag"]
    assert etag[:4].isdigit()
    assert etag[10] == "T"
    assert etag.endswith("Z")
    g = requests.get(f"{sandbox.url}/proposals/{pid}", headers=auth, timeout=5)
    assert g.status_code == 200
    assert g.headers["ETag"] == etag
    assert g.json()["customer"] == PROPOSAL["customer"]
    assert [(e["kind"], e["key"], e["label"]) for e in sandbox.effects] == [
        ("proposal_created", pid, "Test proposal")
    ]


def test_trace_id_on_every_response_and_in_error_bodies(
    sandbox: SieSmartSandbox, auth: dict[str, str]
) -> None:
    """X-B2B-TRACE-ID on every response, unique; the same id inside each error body."""
    responses = [
        create(sandbox, auth),
        requests.get(sandbox.url + "/proposals/nope", headers=auth, timeout=5),
        requests.get(sandbox.url + "/proposals/1", timeout=5),  # 401
        requests.get(sandbox.url + "/no/such/route", timeout=5),  # 404 no route
        token(sandbox),
    ]
    ids = [r.headers["X-B2B-TRACE-ID"] for r in responses]
    assert len(set(ids)) == len(ids)
    for r in responses[1:4]:
        assert r.status_code >= 400
        assert r.json()["traceId"] == r.headers["X-B2B-TRACE-ID"]
    assert responses[2].status_code == 401
    assert responses[2].json()["message"] == "The auth token is invalid or not present"


def test_if_match_missing_stale_and_success(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """Modifying calls: no If-Match -> 412 (seed wording), stale -> 412, current -> new ETag."""
    r = create(sandbox, auth)
    pid, etag = r.json()["id"], r.headers["ETag"]
    url = f"{sandbox.url}/proposals/{pid}/decision"
    missing = requests.post(url, json=DECISION, headers=auth, timeout=5)
    assert missing.status_code == 412
    assert missing.json()["message"] == "For POST requests, the 'If-Match' header is missing"
    put_missing = requests.put(
        f"{sandbox.url}/proposals/{pid}", json={"label": "x"}, headers=auth, timeout=5
    )
    assert put_missing.status_code == 412
    stale = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": "2001-01-01T00:00:00.000000Z"},
        timeout=5,
    )
    assert stale.status_code == 412
    ok = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "renamed"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert ok.status_code == 200
    new_etag = ok.headers["ETag"]
    assert new_etag > etag
    assert ok.json()["label"] == "renamed"
    # the old ETag is stale now
    again = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "again"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert again.status_code == 412
    dec = requests.post(url, json=DECISION, headers={**auth, "If-Match": new_etag}, timeout=5)
    assert dec.status_code == 200
    assert dec.json()["decision"]["decisionStatus"] == "PENDING"
    assert dec.json()["decision"]["commentToRiskAnalyst"] == "good customer"
    assert dec.headers["ETag"] > new_etag
    kinds = [e["kind"] for e in sandbox.effects]
    assert kinds == ["proposal_created", "proposal_updated", "decision_submitted"]


def test_touch_makes_etag_stale(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    r = create(sandbox, auth)
    pid, etag = r.json()["id"], r.headers["ETag"]
    t = requests.post(f"{sandbox.url}/_sandbox/touch/{pid}", timeout=5)
    assert t.status_code == 200
    assert t.headers["ETag"] != etag
    stale = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert stale.status_code == 412


def test_concurrent_edits_control(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """The next modifying call meets a concurrent edit: its fresh ETag is stale on arrival."""
    r = create(sandbox, auth)
    pid, etag = r.json()["id"], r.headers["ETag"]
    c = requests.post(f"{sandbox.url}/_sandbox/concurrent-edits", json={"count": 1}, timeout=5)
    assert c.status_code == 200
    put = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert put.status_code == 412
    fresh = requests.get(f"{sandbox.url}/proposals/{pid}", headers=auth, timeout=5).headers["ETag"]
    put = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": fresh},
        timeout=5,
    )
    assert put.status_code == 200


def test_validation(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """Missing officeId / salesContactId (non-GB) -> 422 with field errors; bad JSON 400."""
    r = create(sandbox, auth, officeId=None)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "officeId"
    r = create(sandbox, auth, salesContactId=None)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "salesContactId"
    gb = create(sandbox, auth, officeId="OFF-GB-2001", salesContactId=None)
    assert gb.status_code == 200
    bad = requests.post(
        sandbox.url + "/proposals",
        data=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
        timeout=5,
    )
    assert bad.status_code == 400
    assert len(sandbox.effects) == 1


def test_decision_preconditions(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    r = requests.post(
        sandbox.url + "/proposals",
        json={"officeId": "OFF-GB-2001"},
        headers=auth,
        timeout=5,
    )
    pid, etag = r.json()["id"], r.headers["ETag"]
    d = requests.post(
        f"{sandbox.url}/proposals/{pid}/decision",
        json=DECISION,
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert d.status_code == 422
    codes = {v["code"] for v in d.json()["preconditionViolations"]}
    assert codes == {"CUSTOMER_MISSING", "ASSETS_MISSING", "CALCULATION_MISSING"}


def test_search_by_label(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    a = create(sandbox, auth, label="alpha").json()["id"]
    create(sandbox, auth, label="beta")
    r = requests.get(
        sandbox.url + "/proposals/search", params={"label": "alpha"}, headers=auth, timeout=5
    )
    assert r.status_code == 200
    assert [p["id"] for p in r.json()["content"]] == [a]
    none = requests.get(
        sandbox.url + "/proposals/search", params={"label": "gamma"}, headers=auth, timeout=5
    )
    assert none.json()["content"] == []


def test_rate_limit_window() -> None:
    """rate_limit requests per window per client; 429 beyond, with no Retry-After."""
    with SieSmartSandbox(rate_limit=3, rate_window=60) as sbx:
        assert isinstance(sbx, SieSmartSandbox)
        r = token(sbx)
        auth = {"Authorization": "Bearer " + r.json()["access_token"]}
        statuses = [
            requests.get(sbx.url + "/proposals/search", headers=auth, timeout=5) for _ in range(4)
        ]
        assert [s.status_code for s in statuses] == [200, 200, 200, 429]
        assert "Retry-After" not in statuses[3].headers
        body = statuses[3].json()
        assert body["message"] == "The request rate limit has been reached"
        assert body["traceId"] == statuses[3].headers["X-B2B-TRACE-ID"]


def test_rate_limit_recovers() -> None:
    """The block lifts when the rate falls below the limit."""
    import time

    with SieSmartSandbox(rate_limit=2, rate_window=0.3) as sbx:
        auth = {"Authorization": "Bearer " + token(sbx).json()["access_token"]}
        got = [
            requests.get(sbx.url + "/proposals/search", headers=auth, timeout=5).status_code
            for _ in range(3)
        ]
        assert got == [200, 200, 429]
        time.sleep(0.35)
        r = requests.get(sbx.url + "/proposals/search", headers=auth, timeout=5)
        assert r.status_code == 200


def test_read_only_forbidden() -> None:
    with SieSmartSandbox(read_only=True) as sbx:
        auth = {"Authorization": "Bearer " + token(sbx).json()["access_token"]}
        r = requests.post(sbx.url + "/proposals", json=PROPOSAL, headers=auth, timeout=5)
        assert r.status_code == 403
        assert r.json()["message"] == "The requested operation is not authorized for your token"


def test_faults_use_error_shape(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """Injected 503 and 429 carry the Error object and the trace id; the token route is
    not affected by faults."""
    sandbox.set_faults(["error*1:503", "throttle*1:2"])
    assert token(sandbox).status_code == 200
    e = create(sandbox, auth)
    assert e.status_code == 503
    assert e.json() == {
        "code": "SERVICE_UNAVAILABLE",
        "message": "Service unavailable",
        "traceId": e.headers["X-B2B-TRACE-ID"],
    }
    t = create(sandbox, auth)
    assert t.status_code == 429
    assert t.headers["Retry-After"] == "2"
    assert create(sandbox, auth).status_code == 200
    assert len(sandbox.effects) == 1


def test_drop_fault_processes_then_drops(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    sandbox.set_faults(["drop*1"])
    with pytest.raises(requests.ConnectionError):
        create(sandbox, auth, label="dropped")
    assert [e["label"] for e in sandbox.effects] == ["dropped"]


def test_reset(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    create(sandbox, auth)
    r = requests.post(sandbox.url + "/_sandbox/reset", timeout=5)
    assert r.status_code == 200
    assert sandbox.proposals == {}
    assert sandbox.effects == []
    # old tokens are forgotten too
    g = requests.get(sandbox.url + "/proposals/search", headers=auth, timeout=5)
    assert g.status_code == 401
    assert json.loads(g.content)["code"] == "UNAUTHORIZED"


def test_lost_request_has_no_effect(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """lose_requests: the connection breaks before the request is handled."""
    sandbox.lose_requests(1)
    with pytest.raises(requests.ConnectionError):
        create(sandbox, auth)
    assert sandbox.effects == []
    assert create(sandbox, auth).status_code == 200
    assert len(sandbox.effects) == 1


@pytest.mark.parametrize(("value", "status"), [("false", 200), ("true", 403), (False, 200)])
def test_options_as_text(value: Any, status: int) -> None:
    """Options given on the command line arrive as text."""
    with SieSmartSandbox(read_only=value, rate_limit="50", token_ttl="60") as sbx:
        auth = {"Authorization": "Bearer " + token(sbx).json()["access_token"]}
        assert token(sbx).json()["expires_in"] == 60
        r = requests.post(sbx.url + "/proposals", json=PROPOSAL, headers=auth, timeout=5)
        assert r.status_code == status


def test_drop_if_match_control(sandbox: SieSmartSandbox, auth: dict[str, str]) -> None:
    """The next modifying call arrives without its If-Match: 412 "missing", the proposal
    unchanged (same ETag); the one after goes through with the same ETag."""
    r = create(sandbox, auth)
    pid, etag = r.json()["id"], r.headers["ETag"]
    c = requests.post(f"{sandbox.url}/_sandbox/drop-if-match", json={"count": 1}, timeout=5)
    assert c.json() == {"drop_if_match": 1}
    put = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert put.status_code == 412
    assert put.json()["message"] == "For PUT requests, the 'If-Match' header is missing"
    got = requests.get(f"{sandbox.url}/proposals/{pid}", headers=auth, timeout=5)
    assert got.headers["ETag"] == etag
    put = requests.put(
        f"{sandbox.url}/proposals/{pid}",
        json={"label": "x"},
        headers={**auth, "If-Match": etag},
        timeout=5,
    )
    assert put.status_code == 200
    bad = requests.post(f"{sandbox.url}/_sandbox/drop-if-match", json={"count": "x"}, timeout=5)
    assert bad.status_code == 400
