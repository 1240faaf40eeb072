"""The docrelay provider contract, run against the eConnect sandbox."""

from __future__ import annotations

from typing import Any

import attrs
from docrelay import Document, DocumentStatus
from docrelay.sandbox import Sandbox
from docrelay.testing import ProviderContractTests
from docrelay_econnect._demo import sample
from docrelay_econnect._ubl import read_ubl

INVOICE = sample("invoice-INV-2024-0101.xml")
#: Without its cbc:ID the invoice is not UBL the sandbox accepts (400).
INVALID = INVOICE.replace(b"<cbc:ID>INV-2024-0101</cbc:ID>", b"")


class TestEConnectContract(ProviderContractTests):
    provider = "econnect"
    sandbox_options = {"delivery_delay": 0}
    #: The documented 400 body (helpLink, message, code, requestId, dateTime) carries no field
    #: errors, but its helpLink must survive as the outcome's error_url.
    rejection_field_errors = False
    rejection_error_url = True

    def provider_settings(self, sandbox: Sandbox) -> dict[str, Any]:
        return {
            "base_url": sandbox.url,
            "client_id": sandbox.config["client_id"],
            "client_secret": sandbox.config["client_secret"],
            "party_id": "NL:KVK:12345678",
        }

    def make_document(self, doc_id: str) -> Document:
        return Document(
            id=doc_id,
            provider="econnect",
            payload=INVOICE,
            kind="invoice",
            content_type="application/xml",
        )

    def make_invalid_document(self, doc_id: str) -> Document:
        return attrs.evolve(self.make_document(doc_id), payload=INVALID)

    def correct(self, document: Document) -> Document:
        return attrs.evolve(document, payload=INVOICE)

    def effects_for(
        self, sandbox: Sandbox, document: Document, status: DocumentStatus
    ) -> list[dict[str, Any]]:
        # Matched by the business identity (the invoice number), not by the documentId, so a
        # resend under a new documentId would show up as a second effect.
        number = read_ubl(document.payload).id
        return [e for e in sandbox.effects if e.get("invoice_id") == number]
