"""docrelay's provider contract, run against the AQI sandbox (webhooks served on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from docrelay import Document, DocumentStatus
from docrelay.sandbox import Sandbox
from docrelay.testing import ProviderContractTests
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox


def _order_reference(doc_id: str) -> str:
    """A distinct AQI orderReference per document (at most 16 alphanumeric characters)."""
    return "C" + hashlib.sha256(doc_id.encode()).hexdigest()[:15].upper()


class TestAqiContract(ProviderContractTests):
    provider = "aqi"
    # AQI: resend corrected data with the same transactionId after ERROR_IN_FILE.
    key_changes_with_revision: ClassVar[bool] = False
    # AQI gives no duplicate answer to a send: a resend of a pending transactionId is answered
    # 200 again (and ignored), one that ended OK gets an asynchronous ERROR_IN_FILE "already
    # processed" (providers.md 5.4, 7.5); test_aqi.py covers both.
    duplicate_answer: ClassVar[bool] = False
    # Webhook answers arrive within a second; the kit's settle() waits the whole timeout for a
    # document queued behind a paused provider (test_config_error_pauses_the_provider).
    settle_timeout: ClassVar[float] = 6.0

    def provider_settings(self, sandbox: Sandbox) -> dict[str, Any]:
        return {
            "base_url": sandbox.url,
            "subscription_key": str(sandbox.config["subscription_key"]),
            "business_code": "1000",
        }

    def prepare_sandbox(self, sandbox: Sandbox, webhook_url: str) -> None:
        assert isinstance(sandbox, AqiSandbox)
        sandbox.register_callback(f"{webhook_url}/aqi", ["accounting/EDIErrorSent"])

    def make_document(self, doc_id: str) -> Document:
        return sample_document(doc_id, "order", "order", orderReference=_order_reference(doc_id))

    def make_invalid_document(self, doc_id: str) -> Document:
        # Passes layer 1 (200), then EDIErrorSent ERROR_IN_FILE (LINEITEMSTATUS,
        # BILLTOLANGUAGECODE), as in seed 004.
        return sample_document(
            doc_id, "order", "order_error_in_file", orderReference=_order_reference(doc_id)
        )

    def correct(self, document: Document) -> Document:
        data = json.loads(document.payload)
        data["billToAddress"]["language"] = data["billToAddress"]["language"].lower()
        for item in data["items"]:
            item["positionType"] = item.get("positionType") or "SALES_ARTICLE"
        return sample_document(document.id, "order", "order_error_in_file", **data)

    def effects_for(
        self, sandbox: Sandbox, document: Document, status: DocumentStatus
    ) -> list[dict[str, Any]]:
        return [e for e in sandbox.effects if e["key"] == status.key]
