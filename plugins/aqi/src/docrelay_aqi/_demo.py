"""The shipped sample payloads, documents built from them, and the demo batch."""

from __future__ import annotations

import json
import secrets
from importlib import resources
from typing import Any

from docrelay import DemoBatch, Document
from docrelay.sandbox import Sandbox

from ._classify import NAME
from .sandbox import AqiSandbox

__all__ = ["demo_batch", "sample", "sample_document"]


def sample(name: str) -> bytes:
    """A sample payload shipped with the plugin (``samples/<name>.json``)."""
    return resources.files(__package__).joinpath("samples", f"{name}.json").read_bytes()


def sample_document(
    doc_id: str,
    kind: str,
    name: str,
    *,
    order_ref: str | None = None,
    customer: str = "TFI2021072801",
    **changes: Any,
) -> Document:
    """A document built from a shipped sample; *changes* replace top-level payload fields.

    The metadata carries ``customer_number``, ``business_code`` and ``order_reference`` (the
    payload's ``orderReference`` for an order), as docrelay's ``hold`` lookups need it.
    """
    data = json.loads(sample(name))
    data.update(changes)
    ref = order_ref or data.get("orderReference")
    metadata = {"customer_number": customer, "business_code": "1000"}
    if ref:
        metadata["order_reference"] = str(ref)
    return Document(
        id=doc_id,
        provider=NAME,
        kind=kind,
        content_type="application/json",
        payload=json.dumps(data, indent=2).encode(),
        metadata=metadata,
    )


def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch | None:
    """``ProviderInfo.demo``: two orders (one ERROR_IN_FILE), an invoice and a return, held
    until their order (and invoice) is confirmed."""
    if not isinstance(sandbox, AqiSandbox):
        return None
    # A webhook secret per demo run: the callback URL carries it (docrelay takes no
    # unauthenticated notification).
    webhook_secret = secrets.token_urlsafe(18)
    sandbox.register_callback(
        f"{webhook_url.rstrip('/')}/{NAME}/{webhook_secret}",
        ["accounting/EDIErrorSent"],
        description="docrelay demo",
    )
    order = sample_document("aqi-order-ODE2024100001", "order", "order")
    bad_order = sample_document("aqi-order-ODE2024100002", "order", "order_error_in_file")
    invoice = sample_document(
        "aqi-invoice-IDE2024100001", "invoice", "invoice", order_ref="ODE2024100001"
    )
    ret = sample_document("aqi-return-RDE2024100001", "return", "return", order_ref="ODE2024100001")
    return DemoBatch(
        settings={
            "subscription_key": str(sandbox.config["subscription_key"]),
            "business_code": "1000",
            "webhook_secret": webhook_secret,
        },
        documents=(order, bad_order, invoice, ret),
    )
