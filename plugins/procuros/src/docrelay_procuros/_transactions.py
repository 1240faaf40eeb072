"""Procuros transaction types and the facts about each that the plugin and the sandbox share.

All of it comes from the Procuros OpenAPI description (``TransactionType`` and the
``<Type>Header`` schemas): the document number field, the required header fields and which
parties send and receive each type; and :func:`build_body`, the ``SendTransaction`` body of a
document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs
from docrelay import Document, DocumentError
from docrelay.helpers import json_object

__all__ = [
    "TRANSACTION_STATUSES",
    "TRANSACTION_TYPES",
    "TYPES",
    "TransactionSpec",
    "build_body",
    "document_number",
    "type_for_kind",
]


@attrs.frozen
class TransactionSpec:
    """What one ``TransactionType`` looks like.

    :param number_field: the header field carrying the document's own number.
    :param required: top-level content fields the schema requires.
    :param header_required: header fields the schema requires.
    :param sender: the header party that sends this type (the ERP's side).
    :param receiver: the header party that receives it (the trade partner).
    """

    type: str
    number_field: str | None
    required: tuple[str, ...]
    header_required: tuple[str, ...]
    sender: str
    receiver: str


_SPECS: Final = (
    TransactionSpec(
        "ORDER",
        "orderIdentifier",
        ("header", "items"),
        ("buyer", "supplier", "orderIdentifier", "orderDate"),
        "buyer",
        "supplier",
    ),
    TransactionSpec(
        "ORDER_RESPONSE",
        "orderResponseIdentifier",
        ("header",),
        ("buyer", "supplier", "orderResponseIdentifier", "orderResponseDate", "orderIdentifier"),
        "supplier",
        "buyer",
    ),
    TransactionSpec(
        "SHIPPING_NOTICE",
        "shippingNoticeIdentifier",
        ("header", "transportUnits"),
        ("buyer", "supplier", "shippingNoticeIdentifier", "shippingNoticeDate", "orderIdentifier"),
        "supplier",
        "buyer",
    ),
    TransactionSpec(
        "INVOICE",
        "invoiceIdentifier",
        ("header", "items"),
        (
            "buyer",
            "supplier",
            "invoiceIdentifier",
            "invoiceDate",
            "shippingNoticeIdentifier",
            "shippingNoticeDate",
            "orderIdentifier",
            "orderDate",
        ),
        "supplier",
        "buyer",
    ),
    TransactionSpec(
        "CREDIT_NOTE",
        "creditNoteIdentifier",
        ("header", "items", "summary"),
        ("buyer", "supplier", "creditNoteIdentifier", "creditNoteDate"),
        "supplier",
        "buyer",
    ),
    TransactionSpec(
        "DISPATCH_INSTRUCTION",
        "shipmentIdentifier",
        ("header", "items"),
        ("shipmentIdentifier", "shipFrom"),
        "customer",
        "shipFrom",
    ),
    TransactionSpec(
        "DISPATCH_INSTRUCTION_RESPONSE",
        "shippingNoticeIdentifier",
        ("header", "transportUnits"),
        ("shippingNoticeIdentifier", "supplier"),
        "shipFrom",
        "supplier",
    ),
    TransactionSpec(
        "RECEIVAL_NOTICE",
        "receivalAdviceNumber",
        ("header", "transportUnits"),
        ("receivalAdviceNumber", "receivalDate", "supplier", "customer"),
        "customer",
        "supplier",
    ),
    TransactionSpec(
        "REMITTANCE_ADVICE",
        "adviceNumber",
        ("header", "items", "summary"),
        ("adviceNumber", "adviceDate"),
        "payFrom",
        "payTo",
    ),
    TransactionSpec(
        "PRODUCT_CATALOG",
        "catalogNumber",
        ("header", "items"),
        ("catalogDate", "sender", "receiver"),
        "sender",
        "receiver",
    ),
    TransactionSpec(
        "INVENTORY_REPORT",
        "inventoryReportIdentifier",
        ("header", "items"),
        ("inventoryReportIdentifier", "inventoryReportDate", "warehouse", "goodsOwner"),
        "warehouse",
        "goodsOwner",
    ),
    TransactionSpec(
        "SALES_REPORT",
        "salesReportIdentifier",
        ("header", "locations"),
        (
            "salesReportIdentifier",
            "salesReportDate",
            "salesPeriodStartDate",
            "salesPeriodEndDate",
            "supplier",
            "buyer",
        ),
        "buyer",
        "supplier",
    ),
)

#: Every ``TransactionType`` of the Procuros API v2, in the order of the OpenAPI enum.
TRANSACTION_TYPES: Final[tuple[str, ...]] = tuple(s.type for s in _SPECS)
#: ``TransactionStatus`` of the Procuros API v2 (the status of a listed transaction).
TRANSACTION_STATUSES: Final[tuple[str, ...]] = (
    "PENDING",
    "SUCCESS",
    "FAILED",
    "DROPPED",
    "UNKNOWN",
)
#: The facts per type.
TYPES: Final[Mapping[str, TransactionSpec]] = {s.type: s for s in _SPECS}

_NORMALISE = re.compile(r"[\s\-.]+")


def type_for_kind(kind: str) -> str | None:
    """The ``TransactionType`` for a document kind, or ``None`` when there is none.

    The kinds are the type names in lower case (``"order"`` -> ``ORDER``, ``"credit_note"`` ->
    ``CREDIT_NOTE``); case, ``-``, ``.`` and spaces are forgiven (``"Order-Response"``).
    """
    norm = _NORMALISE.sub("_", kind.strip()).upper()
    return norm if norm in TYPES else None


def document_number(type_: str | None, content: Any) -> str | None:
    """The document number (order number, invoice number...) in a transaction's content."""
    spec = TYPES.get(type_ or "")
    if spec is None or spec.number_field is None or not isinstance(content, Mapping):
        return None
    header = content.get("header")
    if not isinstance(header, Mapping):
        return None
    value = header.get(spec.number_field)
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


def build_body(document: Document) -> dict[str, Any]:
    """The ``SendTransaction`` body for *document*; :class:`DocumentError` when impossible.

    A payload that is a JSON object with ``type`` and ``content`` is the whole body; any other
    JSON object is the ``content`` and the type comes from the document's kind.
    """
    data = json_object(document)
    kind_type = type_for_kind(document.kind)
    if "type" not in data or "content" not in data:
        if kind_type is None:
            kinds = ", ".join(t.lower() for t in TRANSACTION_TYPES)
            raise DocumentError(
                f"document {document.id}: kind {document.kind!r} has no Procuros "
                f"TransactionType; use one of {kinds} or send the whole {{type, content}} body"
            )
        return {"type": kind_type, "content": data}
    body_type, content = data["type"], data["content"]
    if not isinstance(content, dict):
        raise DocumentError(f"document {document.id}: content must be a JSON object")
    if not isinstance(body_type, str) or body_type not in TYPES:
        raise DocumentError(
            f"document {document.id}: type {body_type!r} is not a Procuros TransactionType"
        )
    if kind_type is not None and kind_type != body_type:
        raise DocumentError(
            f"document {document.id}: kind {document.kind!r} means {kind_type}, "
            f"but the payload says {body_type}"
        )
    return {"type": body_type, "content": content}
