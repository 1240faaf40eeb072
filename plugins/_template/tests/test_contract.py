"""The conformance suite of docrelay, run against the template provider and its sandbox."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
import docrelay_template
from docrelay import Document, DocumentStatus
from docrelay.sandbox import Sandbox
from docrelay.testing import ProviderContractTests


def _payload(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


class TestTemplateContract(ProviderContractTests):
    """Everything ``ProviderContractTests`` proves, for the ``template`` provider."""

    provider = "template"
    # Register the plugin module directly (works installed or not) and load nothing else.
    extra_plugins: ClassVar[tuple[object, ...]] = (docrelay_template,)
    autoload: ClassVar[bool] = False
    # The provider's 422 carries field errors and a link to the error in its portal.
    rejection_error_url: ClassVar[bool] = True

    def provider_settings(self, sandbox: Sandbox) -> dict[str, Any]:
        return {"base_url": sandbox.url, "api_key": sandbox.config["api_key"]}

    def make_document(self, doc_id: str) -> Document:
        return Document(
            id=doc_id,
            provider="template",
            payload=_payload(number=doc_id, total="10.00"),
            content_type="application/json",
        )

    def make_invalid_document(self, doc_id: str) -> Document:
        # No "number": the sandbox answers 422 with a field error.
        return Document(
            id=doc_id,
            provider="template",
            payload=_payload(total="10.00"),
            content_type="application/json",
        )

    def correct(self, document: Document) -> Document:
        return attrs.evolve(document, payload=_payload(number=document.id, total="10.00"))

    def effects_for(
        self, sandbox: Sandbox, document: Document, status: DocumentStatus
    ) -> list[dict[str, Any]]:
        # The sandbox records one effect per Idempotency-Key, i.e. per document revision.
        return [e for e in sandbox.effects if e["key"] == status.key]
