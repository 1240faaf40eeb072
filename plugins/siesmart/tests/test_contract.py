"""docrelay's provider contract, run against the SieSmart sandbox."""

from __future__ import annotations

import json
from typing import Any

import attrs
from docrelay import Document
from docrelay.sandbox import Sandbox
from docrelay.testing import ProviderContractTests
from docrelay_siesmart.sandbox import SieSmartSandbox


def _proposal(doc_id: str, *, valid: bool = True) -> bytes:
    content: dict[str, Any] = {
        "officeId": "OFF-DE-1001",
        "salesContactId": "SC-DE-0417",
        "label": doc_id,
        "customer": {"companyName": "Bauunternehmung Kessler GmbH"},
        "assets": [{"iacCode": "IAC-2210", "description": "Crawler excavator 25 t"}],
        "calculation": {"termMonths": 48, "paymentFrequency": "MONTHLY"},
    }
    if not valid:
        # 422 VALIDATION_FAILED: salesContactId "must not be null (mandatory except for GB
        # offices)"
        del content["salesContactId"]
    return json.dumps(content).encode()


class TestSieSmartContract(ProviderContractTests):
    provider = "siesmart"
    # settle() waits its whole timeout for the queued document of a paused provider
    # (test_config_error_pauses_the_provider); everything else settles in well under 1 s.
    settle_timeout = 4.0

    def provider_settings(self, sandbox: Sandbox) -> dict[str, Any]:
        return {
            "base_url": sandbox.url,
            "client_id": str(sandbox.config["client_id"]),
            "client_secret": str(sandbox.config["client_secret"]),
            # The provider's 100/60 spaces sends 0.6 s apart; the sandbox allows 100/60 too,
            # so the contract run stays far below it either way.
            "rate_limit": "1000/1",
        }

    def make_document(self, doc_id: str) -> Document:
        return Document(
            id=doc_id,
            provider="siesmart",
            kind="proposal",
            content_type="application/json",
            payload=_proposal(doc_id),
        )

    def make_invalid_document(self, doc_id: str) -> Document:
        return attrs.evolve(self.make_document(doc_id), payload=_proposal(doc_id, valid=False))

    def correct(self, document: Document) -> Document:
        return attrs.evolve(document, payload=_proposal(document.id))

    def effects_for(
        self, sandbox: Sandbox, document: Document, status: Any
    ) -> list[dict[str, Any]]:
        # By label: docrelay sends "<document label> [docrelay-<key>]", so every proposal
        # created for this document, whatever the key, is counted.
        assert isinstance(sandbox, SieSmartSandbox)
        prefix = f"{document.id} [docrelay-"
        return [
            e
            for e in sandbox.effects
            if e["kind"] == "proposal_created" and str(e.get("label") or "").startswith(prefix)
        ]
