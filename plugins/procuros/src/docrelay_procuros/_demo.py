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


def batch(sandbox: Sandbox) -> DemoBatch:
    _extend(sandbox, "inactive_receivers", INACTIVE_BUYER)
    _extend(sandbox, "unknown_parties", UNKNOWN_SUPPLIER)
    order = sample("order.json")
    docs = (
        Document(
            id="PO-2024-10417",
            provider="procuros",
            payload=order,
            kind="order",
            content_type="application/json",
            metadata={"document_number": "PO-2024-10417"},
        ),
        Document(
            id="RE-2024-55810",
            provider="procuros",
            payload=sample("invoice.json"),
            kind="invoice",
            content_type="application/json",
            metadata={"document_number": "RE-2024-55810"},
        ),
        Document(
            id="PO-2024-10418",
            provider="procuros",
            payload=sample("order-unknown-supplier.json"),
            kind="order",
            content_type="application/json",
            metadata={"document_number": "PO-2024-10418"},
        ),
        Document(
            # The ERP exported PO-2024-10417 a second time under another record id.
            id="PO-2024-10417-copy",
            provider="procuros",
            payload=order,
            kind="order",
            content_type="application/json",
            metadata={"document_number": "PO-2024-10417"},
        ),
    )
    return DemoBatch(
        settings={"api_token": str(sandbox.config.get("api_token", "procuros-sandbox-token"))},
        documents=docs,
        expect=(
            "PO-2024-10417: delivered (TRANSMITTED, procurosTransactionId)",
            "RE-2024-55810: no_action (NO_ACTION, trade relationship not yet active)",
            "PO-2024-10418: rejected (422, field errors, portal errorUrl; reported to /v2/errors)",
            "PO-2024-10417-copy: duplicate (400 Payload already received)",
        ),
    )
