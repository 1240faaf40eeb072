"""The eBillingHub sandbox over real HTTP on 127.0.0.1 (requests, no mocks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import resources

import pytest
import requests
from docrelay_ebh.sandbox import EbhSandbox

KEY = "sandbox-provider-key"
NEW = "/ebh/validations/v2/ValidationRequest"
OLD = "/validations/api/v1/ValidationRequest"


def sample(name: str) -> bytes:
    return resources.files("docrelay_ebh").joinpath("samples", name).read_bytes()


GOOD = sample("ubf_invoice_ok.xml")
BAD = sample("ubf_invoice_bad_currency.xml")
ESF = sample("esf_invoice_ok.xml")


@pytest.fixture(scope="module")
def _server() -> Iterator[EbhSandbox]:
    sb = EbhSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def sandbox(_server: EbhSandbox) -> EbhSandbox:
    """One server per module (stopping one takes 0.5 s); fresh state and options per test."""
    _server.set_faults([])
    for name, default in EbhSandbox.options.items():
        _server.set_option(name, default)
    _server.reset()
    return _server


def headers(producer: str = "P1", key: str = KEY, **extra: str) -> dict[str, str]:
    h = {"ProducerId": producer, "ProviderKey": key, "Accept": "application/json"}
    h.update(extra)
    return h


def post(
    sb: EbhSandbox,
    body: bytes = GOOD,
    path: str = NEW,
    h: dict[str, str] | None = None,
    **extra: str,
) -> requests.Response:
    hh = headers(**{"Content-Type": "application/xml", **extra}) if h is None else h
    return requests.post(sb.url + path, data=body, headers=hh, timeout=5)


def get(sb: EbhSandbox, rid: str, path: str = NEW, **kw: str) -> requests.Response:
    return requests.get(f"{sb.url}{path}/{rid}", headers=headers(**kw), timeout=5)


def test_post_201_location_operation_id_and_body(sandbox: EbhSandbox) -> None:
    """POST answers 201 with Location, OperationId and the in-progress body."""
    r = post(sandbox)
    assert r.status_code == 201
    body = r.json()
    assert body["Status"] == 1
    assert body["InvoiceType"] == 3
    assert body["ValidationResults"] == []
    assert body["StartTime"] is None
    assert r.headers["Location"] == f"{sandbox.url}{NEW}/{body['Id']}"
    assert r.headers["OperationId"]
    assert [e["key"] for e in sandbox.effects] == [body["Id"]]
    assert sandbox.effects[0]["kind"] == "validation_requested"
    assert sandbox.effects[0]["invoice_ids"] == ["INV-2024-0117"]


def test_poll_progress_202_status_1_then_2_then_200(sandbox: EbhSandbox) -> None:
    """Default polls_until_done=2: 202 (Status 1), 202 (Status 2), then 200 (Status 4)."""
    rid = post(sandbox).json()["Id"]
    seen = []
    for _ in range(3):
        r = get(sandbox, rid)
        seen.append((r.status_code, r.json()["Status"]))
    assert seen == [(202, 1), (202, 2), (200, 4)]
    done = r.json()
    assert done["ValidationMessage"] == "Validation Complete"
    assert done["ValidationResults"] == []
    assert done["EndTime"] is not None
    assert done["ValidatedInvoiceUrl"].startswith(sandbox.url)
    assert r.headers["OperationId"]


def test_currency_rule_gives_ubf_message(sandbox: EbhSandbox) -> None:
    """An invoice with <currency>EURO</currency> completes with the seed's UBF_MESSAGE."""
    sandbox.set_option("polls_until_done", 0)
    rid = post(sandbox, BAD).json()["Id"]
    r = get(sandbox, rid)
    assert r.status_code == 200
    assert r.json()["ValidationResults"] == [
        {
            "Severity": "UBF_MESSAGE",
            "Identifier": "UBFDocument/consumers/item[@consumerId='1710']/invoices/"
            "item[@invoiceId='INV-2024-0118']/currency",
            "Message": "The currency must follow ISO Codes",
            "RulePath": "UbfValidation_Ledes_standard.Invoice.invoice_UBF.Validate_currency."
            "Validate_currency",
        }
    ]


def test_esf_invoice_type_and_currency_rule(sandbox: EbhSandbox) -> None:
    sandbox.set_option("polls_until_done", 0)
    r = post(sandbox, ESF, InvoiceType="ESF")
    assert r.json()["InvoiceType"] == 1
    assert get(sandbox, r.json()["Id"]).json()["ValidationResults"] == []
    bad = ESF.replace(b"<currency>USD</currency>", b"<currency>XYZ</currency>")
    rid = post(sandbox, bad, InvoiceType="ESF").json()["Id"]
    results = get(sandbox, rid).json()["ValidationResults"]
    assert [x["Identifier"] for x in results] == [
        "payor_orgs/payor_org/invoice[@id='INV-2024-0119']/currency"
    ]


def test_old_url_style_and_v1(sandbox: EbhSandbox) -> None:
    r = post(sandbox, path=OLD)
    assert r.status_code == 201
    assert "/validations/api/v1/ValidationRequest/" in r.headers["Location"]
    assert get(sandbox, r.json()["Id"], path=OLD).status_code == 202


@pytest.mark.parametrize(
    "path", ["/ebh/validations/v3/ValidationRequest", "/validations/api/x/ValidationRequest"]
)
def test_unknown_version_404(sandbox: EbhSandbox, path: str) -> None:
    assert post(sandbox, path=path).status_code == 404


def test_header_checks_in_documented_order(sandbox: EbhSandbox) -> None:
    """400 missing header, then 401 key, 406 Accept, 415 Content-Type, 413 size, 400 body."""
    sandbox.set_option("max_payload", 200)
    big = b"<a>" + b"x" * 500 + b"</a>"
    # Everything wrong at once: missing ProviderKey wins (400).
    r = post(sandbox, big, h={"ProducerId": "P1", "Accept": "text/html"})
    assert (r.status_code, "ProviderKey" in r.json()["Message"]) == (400, True)
    r = post(sandbox, big, h={"ProviderKey": KEY})
    assert r.status_code == 400
    r = post(sandbox, big, h=headers(key="wrong", Accept="text/html"))
    assert r.status_code == 401
    assert r.json() == {"Message": "The Provider Key is not authorized."}
    r = post(sandbox, big, h=headers(Accept="text/html", **{"Content-Type": "text/plain"}))
    assert r.status_code == 406
    r = post(sandbox, big, h=headers(**{"Content-Type": "text/plain"}))
    assert r.status_code == 415
    r = post(sandbox, big, h=headers(**{"Content-Type": "application/xml"}, InvoiceType="Nope"))
    assert r.status_code == 413
    r = post(sandbox, b"not xml")
    assert r.status_code == 400
    r = post(sandbox, b"<a/>", InvoiceType="Nope")
    assert r.status_code == 400
    assert "InvoiceType" in r.json()["Message"]
    assert sandbox.effects == []


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html, */*;q=0.1"])
def test_accept_values(sandbox: EbhSandbox, accept: str) -> None:
    assert post(sandbox, Accept=accept).status_code == 201


def test_no_accept_header_is_fine(sandbox: EbhSandbox) -> None:
    h = {"ProducerId": "P1", "ProviderKey": KEY, "Content-Type": "application/xml"}
    r = requests.post(sandbox.url + NEW, data=GOOD, headers=h, timeout=5)
    assert r.status_code == 201


def test_get_checks(sandbox: EbhSandbox) -> None:
    """GET: other producer or unknown id -> 404, a non-GUID id -> 400, bad key -> 401."""
    rid = post(sandbox).json()["Id"]
    assert get(sandbox, rid, producer="P2").status_code == 404
    assert get(sandbox, "0f0e1d2c-3b4a-5968-7766-554433221100").status_code == 404
    assert get(sandbox, "not-a-guid").status_code == 400
    assert get(sandbox, rid, key="nope").status_code == 401
    assert get(sandbox, rid, Accept="application/xml").status_code == 406
    assert get(sandbox, rid).status_code == 202


def test_fail_status3_next_request(sandbox: EbhSandbox) -> None:
    """fail_status3=1: the next validation ends with Status 3, later ones complete."""
    sandbox.set_option("polls_until_done", 0)
    sandbox.set_option("fail_status3", 1)
    first = get(sandbox, post(sandbox).json()["Id"])
    second = get(sandbox, post(sandbox).json()["Id"])
    assert (first.status_code, first.json()["Status"]) == (200, 3)
    assert (second.status_code, second.json()["Status"]) == (200, 4)


def test_seconds_until_done(sandbox: EbhSandbox) -> None:
    sandbox.set_option("seconds_until_done", 0.3)
    rid = post(sandbox).json()["Id"]
    assert get(sandbox, rid).status_code == 202
    time.sleep(0.35)
    assert get(sandbox, rid).status_code == 200


def test_fault_error_uses_provider_body(sandbox: EbhSandbox) -> None:
    """Injected 500s carry the seed's {"Message": ...} and do not create a request."""
    sandbox.set_faults(["error*1:500"])
    r = post(sandbox)
    assert r.status_code == 500
    assert r.json() == {
        "Message": "An unexpected error occurred. Please, contact the support team."
    }
    assert sandbox.effects == []
    assert post(sandbox).status_code == 201


def test_every_post_is_a_new_validation_request(sandbox: EbhSandbox) -> None:
    """No idempotency at eBillingHub: the same body twice -> two requests, two effects."""
    a, b = post(sandbox).json()["Id"], post(sandbox).json()["Id"]
    assert a != b
    assert len(sandbox.effects) == 2


def test_reset_forgets_requests(sandbox: EbhSandbox) -> None:
    rid = post(sandbox).json()["Id"]
    sandbox.reset()
    assert sandbox.effects == []
    assert get(sandbox, rid).status_code == 404


def test_options_from_strings() -> None:
    """Options as the command line gives them (strings)."""
    sb = EbhSandbox(provider_keys="k1, k2", fail_status3="true", polls_until_done="0")
    sb.start()
    try:
        h = headers(key="k2", **{"Content-Type": "application/xml"})
        rid = post(sb, h=h).json()["Id"]
        r = requests.get(f"{sb.url}{NEW}/{rid}", headers=headers(key="k1"), timeout=5)
        assert r.json()["Status"] == 3
    finally:
        sb.stop()


def test_unknown_option_rejected() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EbhSandbox(nope=1)


# -- poll fault injection: every status of the GET, as eBillingHub answers it -------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "The request was incorrectly formatted"),
        (401, "The Provider Key is not authorized."),
        (406, "Provided Accept HTTP Header is not supported."),
        (500, "An unexpected error occurred. Please, contact the support team."),
        (403, "Forbidden"),
        (404, "The validation request was not found."),
        (409, "Conflict"),
        (503, "An unexpected error occurred. Please, contact the support team."),
    ],
)
def test_poll_faults_answer_the_next_gets(sandbox: EbhSandbox, status: int, message: str) -> None:
    """``poll_faults`` makes the next GETs answer these statuses; then progress resumes."""
    rid = post(sandbox).json()["Id"]
    sandbox.set_option("poll_faults", f"{status},{status}")
    for _ in range(2):
        r = get(sandbox, rid)
        assert r.status_code == status
        assert r.json()["Message"].startswith(message)
        assert r.headers["OperationId"]
    vr = sandbox.validation_request(rid)
    assert vr is not None
    assert vr.polls == 0  # a faulted GET does not advance the validation
    assert get(sandbox, rid).status_code == 202
    assert sandbox.faults_injected["poll"] == 2


def test_poll_faults_leave_posts_alone(sandbox: EbhSandbox) -> None:
    sandbox.set_option("poll_faults", (400,))
    assert post(sandbox).status_code == 201
    assert sandbox.validation_requests[0].polls == 0


@pytest.mark.parametrize("value", ["200", "202", "99", "600", "x"])
def test_poll_faults_take_error_statuses_only(value: str) -> None:
    with pytest.raises(ValueError, match="poll_faults"):
        EbhSandbox(poll_faults=value)
