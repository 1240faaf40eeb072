"""Procuros' part of ``docrelay demo``: four outcomes from realistic ORDER/INVOICE payloads."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from docrelay import DemoBatch, Document

if TYPE_CHECKING:
    from docrelay.sandbox import Sandbox

__all__ = ["INACTIVE_BUYER", "UNKNOWN_SUPPLIER", "batch", "sample"]

#: GLN of the buyer of samples/invoice.json; its trade relationship is "not yet active".
INACTIVE_BUYER = "4011111000005"
#: GLN of the supplier of samples/order-unknown-supplier.json, unknown to Procuros.
UNKNOWN_SUPPLIER = "4099999000001"


def sample(name: str) -> bytes:
    """The bytes of ``samples/<name>``."""
    return resources.files(__package__).joinpath("samples", name).read_bytes()


def _extend(sandbox: Sandbox, option: str, value: str) -> None:
    current: Any = sandbox.config.get(option) or ()
    items = [v.strip() for v in current.split(",")] if isinstance(current, str) else list(current)
    if value not in items:
        items.append(value)
    sandbox.config[option] = tuple(i for i in items if i)


def _document(doc_id: str, name: str, kind: str, number: str) -> Document:
    return Document(
        id=doc_id,
        provider="procuros",
        payload=sample(name),
        kind=kind,
        content_type="application/json",
        metadata={"document_number": number},
    )


def batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch:
    """``ProviderInfo.demo``: PO-2024-10417 delivered (``TRANSMITTED``), RE-2024-55810
    no_action (trade relationship not yet active), PO-2024-10418 rejected (422, field errors,
    the portal link; reported to ``/v2/errors``), PO-2024-10417-copy duplicate (400 "Payload
    already received"). Procuros has no webhooks: *webhook_url* is not used."""
    _extend(sandbox, "inactive_receivers", INACTIVE_BUYER)
    _extend(sandbox, "unknown_parties", UNKNOWN_SUPPLIER)
    docs = (
        _document("PO-2024-10417", "order.json", "order", "PO-2024-10417"),
        _document("RE-2024-55810", "invoice.json", "invoice", "RE-2024-55810"),
        _document("PO-2024-10418", "order-unknown-supplier.json", "order", "PO-2024-10418"),
        # The ERP exported PO-2024-10417 a second time under another record id.
        _document("PO-2024-10417-copy", "order.json", "order", "PO-2024-10417"),
    )
    return DemoBatch(
        settings={"api_token": str(sandbox.config.get("api_token", "procuros-sandbox-token"))},
        documents=docs,
    )
