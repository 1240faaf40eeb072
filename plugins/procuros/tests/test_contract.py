"""docrelay's provider contract, run against the Procuros sandbox."""

from __future__ import annotations

import json
from typing import Any

import attrs
from docrelay import Document
from docrelay.sandbox import Sandbox
from docrelay.testing import ProviderContractTests
from docrelay_procuros._demo import sample


def _order(doc_id: str, *, supplier_ids: bool = True) -> bytes:
    content = json.loads(sample("order.json"))
    # One order number per document: two documents never share a payload by accident.
    content["header"]["orderIdentifier"] = doc_id
    if not supplier_ids:
        content["header"]["supplier"]["identifiers"] = []
    return json.dumps(content).encode()


class TestProcurosContract(ProviderContractTests):
    provider = "procuros"
    # Every Procuros answer is final at once; a shorter wait keeps the config-error test (which
    # waits out the queued document of the paused provider) from taking 20 s.
    settle_timeout = 5.0

    def provider_settings(self, sandbox: Sandbox) -> dict[str, Any]:
        return {"base_url": sandbox.url, "api_token": str(sandbox.config["api_token"])}

    def make_document(self, doc_id: str) -> Document:
        return Document(
            id=doc_id,
            provider="procuros",
            payload=_order(doc_id),
            kind="order",
            content_type="application/json",
        )

    def make_invalid_document(self, doc_id: str) -> Document:
        # 422: "The content.header.supplier.identifiers field is required."
        return attrs.evolve(self.make_document(doc_id), payload=_order(doc_id, supplier_ids=False))

    def correct(self, document: Document) -> Document:
        return attrs.evolve(document, payload=_order(document.id))

    def effects_for(
        self, sandbox: Sandbox, document: Document, status: Any
    ) -> list[dict[str, Any]]:
        # By order number: after a lost answer the resend is answered "Payload already
        # received", which carries no procurosTransactionId.
        return [
            e
            for e in sandbox.effects
            if e["kind"] == "transaction_received" and e["document_number"] == document.id
        ]
