"""End to end: docrelay.Relay -> the eConnect plugin -> the eConnect sandbox on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docrelay
import pytest
from docrelay import Document, DocumentError, OutcomeKind, Relay
from docrelay.sandbox import TokenIssuer
from docrelay.testing import FAST_ENGINE
from docrelay_econnect import demo_batch
from docrelay_econnect._demo import sample
from docrelay_econnect.sandbox import EConnectSandbox

PARTY = "NL:KVK:12345678"
FAST = dict(FAST_ENGINE)


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[EConnectSandbox]:
    with EConnectSandbox(delivery_delay=0) as sb:
        assert isinstance(sb, EConnectSandbox)
        yield sb


@pytest.fixture
def sandbox(shared_sandbox: EConnectSandbox) -> EConnectSandbox:
    shared_sandbox.reset()
    shared_sandbox.set_faults([])
    shared_sandbox.config.update(EConnectSandbox.options, delivery_delay=0)
    return shared_sandbox


def settings(sb: EConnectSandbox, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": sb.url,
        "client_id": sb.config["client_id"],
        "client_secret": sb.config["client_secret"],
        "party_id": PARTY,
        **extra,
    }


@pytest.fixture
def make_relay(tmp_path: Path) -> Iterator[Any]:
    relays: list[Relay] = []

    def make(sb: EConnectSandbox, engine: dict[str, Any] | None = None, **extra: Any) -> Relay:
        relay = Relay(
            store="sqlite:///" + str(tmp_path / f"d{len(relays)}.db"),
            providers={"econnect": settings(sb, **extra)},
            engine={**FAST, **(engine or {})},
        )
        relays.append(relay)
        return relay

    yield make
    for r in relays:
        r.close()


def invoice(
    doc_id: str = "inv-0101", name: str = "invoice-INV-2024-0101.xml", **meta: str
) -> Document:
    return Document(
        id=doc_id,
        provider="econnect",
        payload=sample(name),
        kind="invoice",
        content_type="application/xml",
        metadata=meta,
    )


def api_requests(sb: EConnectSandbox) -> list[dict[str, Any]]:
    return [r for r in sb.requests if r["path"].startswith("/api/")]


def test_invoice_is_delivered_once_with_its_document_id(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    relay = make_relay(sandbox)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "delivered"
    assert st.key is not None
    assert st.provider_ref == st.key
    assert sandbox.effects[0]["kind"] == "invoice_received"
    assert (sandbox.effects[0]["key"], sandbox.effects[0]["invoice_id"]) == (
        st.key,
        "INV-2024-0101",
    )
    (sent,) = api_requests(sandbox)
    assert sent["path"] == f"/api/v1/{PARTY}/salesInvoice/send"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-econnect-documentid"] == st.key
    assert headers["content-type"] == "application/xml"
    assert "authorization" in headers  # its value is masked in the sandbox's log


def test_order_goes_to_purchase_order_send(sandbox: EConnectSandbox, make_relay: Any) -> None:
    relay = make_relay(sandbox)
    relay.submit(
        Document(
            id="po-0420",
            provider="econnect",
            payload=sample("order-PO-2024-0420.xml"),
            kind="order",
            content_type="application/xml",
        )
    )
    relay.run_until_settled(timeout=10)
    assert relay.status("po-0420").state == "delivered"
    assert [r["path"] for r in api_requests(sandbox)] == [f"/api/v1/{PARTY}/purchaseOrder/send"]
    assert sandbox.effects[0]["order_id"] == "PO-2024-0420"


def test_party_id_from_metadata_overrides_the_setting(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    relay = make_relay(sandbox)
    relay.submit(invoice(party_id="NL:KVK:87654321"))
    relay.run_until_settled(timeout=10)
    assert relay.status("inv-0101").state == "delivered"
    assert sandbox.effects[0]["party"] == "NL:KVK:87654321"


def test_multipart_upload_mode(sandbox: EConnectSandbox, make_relay: Any) -> None:
    relay = make_relay(sandbox, content_type="multipart/form-data")
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "delivered"
    assert st.key is not None
    record = sandbox.document(PARTY, st.key)
    assert record is not None
    assert record["payload"] == sample("invoice-INV-2024-0101.xml")


def test_dropped_answer_then_resend_is_duplicate_and_processed_once(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    sandbox.set_faults(["drop*1"])
    relay = make_relay(sandbox)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "duplicate"
    assert len(sandbox.effects) == 1
    kinds = [a.outcome.kind for a in relay.history("inv-0101") if a.outcome is not None]
    assert kinds == [OutcomeKind.UNKNOWN, OutcomeKind.DUPLICATE]
    keys = {a.key for a in relay.history("inv-0101")}
    assert keys == {st.key}


def test_503_is_retried_then_delivered(sandbox: EConnectSandbox, make_relay: Any) -> None:
    sandbox.set_faults(["error*2:503"])
    relay = make_relay(sandbox)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "delivered"
    assert st.attempts == 3
    statuses = [a.status for a in relay.history("inv-0101") if a.action == "send"]
    assert statuses == [503, 503, 200]
    assert len(sandbox.effects) == 1


def test_token_is_fetched_once_and_reused(sandbox: EConnectSandbox, make_relay: Any) -> None:
    relay = make_relay(sandbox)
    for i, name in enumerate(["0101", "0102", "0103"]):
        relay.submit(invoice(f"inv-{i}", f"invoice-INV-2024-{name}.xml"))
    relay.run_until_settled(timeout=10)
    assert [s.state for s in relay.statuses()] == ["delivered"] * 3
    assert sandbox.tokens.issued == 1


def test_expired_token_is_refreshed_once_on_401(sandbox: EConnectSandbox, make_relay: Any) -> None:
    relay = make_relay(sandbox)
    relay.submit(invoice("a"))
    relay.run_until_settled(timeout=10)
    sandbox.tokens = TokenIssuer(ttl=3600)  # the server forgets every token it issued
    relay.submit(invoice("b", "invoice-INV-2024-0102.xml"))
    relay.run_until_settled(timeout=10)
    assert relay.status("b").state == "delivered"
    statuses = [a.status for a in relay.history("b") if a.action == "send"]
    assert statuses == [401, 200]
    assert sandbox.tokens.issued == 1  # the fresh issuer handed out exactly one new token


def test_401_after_a_fresh_token_is_a_config_error(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    sandbox.config["require_subscription_key"] = True  # every call answers 401
    relay = make_relay(sandbox)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "failed"
    assert st.outcome is not None
    assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
    assert [a.status for a in relay.history("inv-0101") if a.action == "send"] == [401, 401]
    assert sandbox.effects == []


def test_subscription_key_is_sent_when_set(sandbox: EConnectSandbox, make_relay: Any) -> None:
    sandbox.config["require_subscription_key"] = True
    relay = make_relay(sandbox, subscription_key=sandbox.config["subscription_key"])
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    assert relay.status("inv-0101").state == "delivered"


def test_refused_client_credentials_are_a_config_error_without_the_secret(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    secret = "wrong-secret-do-not-leak-4711"
    relay = make_relay(sandbox, client_secret=secret)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "failed"
    assert st.outcome is not None
    assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
    assert st.outcome.message is not None
    assert "invalid_client" in st.outcome.message
    assert api_requests(sandbox) == []
    dump = json.dumps(
        [st.to_dict()] + [a.outcome.to_dict() for a in relay.history("inv-0101") if a.outcome]
    )
    assert secret not in dump


def test_unreachable_token_endpoint_is_retried_not_failed_for_config(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    with EConnectSandbox() as down:
        dead_url = down.url + "/connect/token"
    relay = make_relay(sandbox, engine={"max_attempts": 2}, token_url=dead_url)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "failed"
    kinds = {a.outcome.kind for a in relay.history("inv-0101") if a.outcome is not None}
    assert kinds == {OutcomeKind.RETRY}
    assert api_requests(sandbox) == []


def test_party_not_linked_is_a_config_error(sandbox: EConnectSandbox, make_relay: Any) -> None:
    relay = make_relay(sandbox, party_id="NL:KVK:99999999")
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "failed"
    assert st.outcome is not None
    assert (st.outcome.kind, st.outcome.status) == (OutcomeKind.CONFIG_ERROR, 403)
    assert st.outcome.message is not None
    assert "NL:KVK:99999999" in st.outcome.message


def test_invalid_ubl_is_rejected_with_the_provider_words(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    relay = make_relay(sandbox)
    bad = sample("invoice-INV-2024-0101.xml").replace(b"<cbc:ID>INV-2024-0101</cbc:ID>", b"")
    relay.submit(Document(id="bad", provider="econnect", payload=bad, kind="invoice"))
    relay.run_until_settled(timeout=10)
    st = relay.status("bad")
    assert st.state == "rejected"
    assert st.outcome is not None
    assert st.outcome.status == 400
    assert st.outcome.message is not None
    assert st.outcome.message.startswith("API400: ")
    assert "cbc:ID" in st.outcome.message
    assert st.outcome.error_url == "https://psb.econnect.eu/endpoints/overview.html"
    assert st.outcome.request_id
    assert sandbox.effects == []


def test_413_from_the_provider_is_rejected(sandbox: EConnectSandbox, make_relay: Any) -> None:
    sandbox.config["max_payload"] = 1000
    relay = make_relay(sandbox)
    relay.submit(invoice())
    relay.run_until_settled(timeout=10)
    st = relay.status("inv-0101")
    assert st.state == "rejected"
    assert st.outcome is not None
    assert st.outcome.status == 413


def test_over_max_payload_bytes_is_refused_at_submit(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    relay = make_relay(sandbox, max_payload_bytes=1000)
    with pytest.raises(DocumentError, match="1000"):
        relay.submit(invoice())
    assert sandbox.requests == []


def test_corrected_revision_gets_a_new_document_id(
    sandbox: EConnectSandbox, make_relay: Any
) -> None:
    relay = make_relay(sandbox)
    bad = sample("invoice-INV-2024-0101.xml").replace(b"<cbc:ID>INV-2024-0101</cbc:ID>", b"")
    relay.submit(Document(id="inv", provider="econnect", payload=bad, kind="invoice"))
    relay.run_until_settled(timeout=10)
    first_key = relay.status("inv").key
    relay.submit(invoice("inv"))
    relay.run_until_settled(timeout=10)
    st = relay.status("inv")
    assert st.state == "delivered"
    assert st.key != first_key


@pytest.mark.parametrize("workers", [1, 4])
def test_demo_batch_shows_what_it_promises(
    sandbox: EConnectSandbox, tmp_path: Path, workers: int
) -> None:
    batch = demo_batch(sandbox=sandbox, webhook_url="http://127.0.0.1:9/hooks")
    assert batch is not None
    sandbox.set_faults(batch.faults)
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "demo.db"),
        providers={"econnect": dict(batch.settings)},
        engine=FAST,
    )
    try:
        for doc in batch.documents:
            relay.submit(doc)
        relay.run_until_idle(workers=workers)
        relay.run_until_settled(timeout=15)
        by_id = {s.id: s for s in relay.statuses()}
        assert {k: str(v.state) for k, v in by_id.items()} == {
            "econnect-INV-2024-0101": "delivered",
            "econnect-INV-2024-0102": "duplicate",
            "econnect-INV-2024-0103": "delivered",
            "econnect-INV-DRAFT-0104": "rejected",
            "econnect-PO-2024-0420": "delivered",
        }
        first = [a.status for a in relay.history("econnect-INV-2024-0101") if a.action == "send"]
        assert first == [503, 200]
        second = [
            a.outcome.kind
            for a in relay.history("econnect-INV-2024-0102")
            if a.action == "send" and a.outcome
        ]
        assert second == [OutcomeKind.UNKNOWN, OutcomeKind.DUPLICATE]
        draft = by_id["econnect-INV-DRAFT-0104"].outcome
        assert draft is not None
        assert draft.error_url == "https://psb.econnect.eu/endpoints/overview.html"
        assert draft.message is not None
        assert "cbc:ID" in draft.message
        assert len(sandbox.effects) == 4  # every valid document taken in exactly once
    finally:
        relay.close()


@pytest.mark.parametrize(
    ("env", "identity_host"),
    [("acceptance", "accp-identity.econnect.eu"), ("production", "identity.econnect.eu")],
)
def test_real_environments_may_reach_their_identity_server(
    tmp_path: Path, env: str, identity_host: str
) -> None:
    """The engine sends auxiliary requests only to configured hosts: the default token URLs
    are settings so that the identity servers are among them (no request is made here)."""
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "env.db"),
        providers={
            "econnect": {
                "env": env,
                "client_id": "c",
                "client_secret": "s-secret",
                "party_id": PARTY,
            }
        },
    )
    try:
        runtime = relay.engine.runtime("econnect")
        assert runtime.base_url.endswith("psb.econnect.eu")
        assert identity_host in runtime.allowed_hosts
    finally:
        relay.close()


# -- the documentId rule: letters, digits and '-' only, at least six (seed 000) ---------------


class _KeyPlugin:
    """A middleware plugin whose ``idempotency_key`` wins over docrelay's default UUID."""

    def __init__(self, key: str) -> None:
        self.key = key

    @docrelay.hookimpl
    def idempotency_key(self, document: Document, ctx: Any) -> str:
        return self.key


class _HeaderPlugin:
    """A middleware plugin that tries to set the documentId header itself."""

    def __init__(self, value: str) -> None:
        self.value = value

    @docrelay.hookimpl
    def prepare_headers(self, request: Any, ctx: Any) -> dict[str, str]:
        return {"X-EConnect-DocumentId": self.value, "X-Trace": "t-1"}


@pytest.mark.parametrize(
    "bad_id",
    ["inv.2024.0101", "inv+2024+0101", "inv/2024/0101", "inv:2024:0101", "inv#20240101", "ab12"],
)
def test_document_id_with_special_characters_never_reaches_econnect(
    sandbox: EConnectSandbox, tmp_path: Path, bad_id: str
) -> None:
    """A documentId from any key hook is checked before sending: rejected, nothing on the wire."""
    with Relay(
        store="sqlite:///" + str(tmp_path / "k.db"),
        providers={"econnect": settings(sandbox)},
        engine=FAST,
        plugins=[_KeyPlugin(bad_id)],
    ) as relay:
        relay.submit(invoice())
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-0101")
    assert st.state == "rejected"
    assert st.key == bad_id
    assert st.outcome.rule == "docrelay:refused-before-send"
    assert "refused before sending" in (st.outcome.message or "")
    assert "X-EConnect-DocumentId" in (st.outcome.message or "")
    assert api_requests(sandbox) == []
    assert sandbox.effects == []


def test_a_middleware_cannot_replace_the_checked_document_id(
    sandbox: EConnectSandbox, tmp_path: Path
) -> None:
    """prepare_headers of another plugin is a source of the header too: the checked key wins."""
    with Relay(
        store="sqlite:///" + str(tmp_path / "h.db"),
        providers={"econnect": settings(sandbox)},
        engine=FAST,
        plugins=[_HeaderPlugin("not.a.valid.id")],
    ) as relay:
        relay.submit(invoice())
        relay.run_until_settled(timeout=10)
        st = relay.status("inv-0101")
    assert st.state == "delivered"
    (sent,) = api_requests(sandbox)
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-econnect-documentid"] == st.key
    assert headers["x-trace"] == "t-1"
    assert sandbox.effects[0]["key"] == st.key
